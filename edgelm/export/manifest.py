"""`manifest.json`: what an export folder holds and how to feed it — the contract for runtimes, bench and apps.

Written by the export stage, rewritten by the quantize stage (`refresh_file_hashes` after it replaces files).
"""

from __future__ import annotations

import os
from pathlib import Path

from edgelm.core.io import sha256_file
from edgelm.core.metrics import files_mb
from edgelm.export.formats import FORMATS, PREFERRED
from edgelm.export.onnx_io import model_files
from edgelm.core.records import MANIFEST_SCHEMA, FileEntry, KVCache, Manifest, TensorSpec  # noqa: F401 (re-exported)

MANIFEST_FILE = Manifest.FILE


def file_entries(folder: Path, names: list[str]) -> dict[str, FileEntry]:
    folder = Path(folder)
    return {n: FileEntry(sha256=sha256_file(folder / n), bytes=(folder / n).stat().st_size)
            for n in sorted(set(names)) if (folder / n).is_file()}


ARTIFACT_SUFFIXES = tuple(f".{f.name}{s}" for f in FORMATS.values() for s in ("", *f.sidecars))


def artifact_sizes(artifacts: dict[str, str | os.PathLike]) -> dict:
    """`size_mb` (MB of the files the shipped artifact needs: .ort, else .onnx + external data, else .pte) and
    `size_mb_by_format`, from {format: path}."""
    by_format = {fmt: files_mb(model_files(artifacts[fmt])) for fmt in PREFERRED if fmt in artifacts}
    return {"size_mb": next(iter(by_format.values()), None), "size_mb_by_format": by_format}


def folder_artifacts(folder: Path, names) -> dict[str, Path]:
    """{format: path} of the model files among `names` in `folder`."""
    return {fmt: Path(folder) / n for n in sorted(names) for fmt in PREFERRED if n.endswith(f".{fmt}")}


def refresh_file_hashes(folder: str | os.PathLike, names: list[str] | None = None) -> Manifest:
    """Re-hash the listed files (default: those already listed plus any artifact present) and save the manifest."""
    folder = Path(folder)
    manifest = Manifest.load(folder)
    if names is None:
        names = list(manifest.files) + [p.name for p in folder.iterdir() if p.name.endswith(ARTIFACT_SUFFIXES)]
    entries = file_entries(folder, [n for n in names if (folder / n).is_file()])
    manifest.files = entries
    manifest.metrics.update(artifact_sizes(folder_artifacts(folder, entries)))
    manifest.save(folder)
    return manifest
