"""`manifest.json`: what an export folder holds and how to feed it — the contract for runtimes, bench and apps.

Written by the export stage, rewritten by the quantize stage (`refresh_file_hashes` after it replaces files).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgelm.core.errors import EdgelmError
from edgelm.core.io import sha256_file

MANIFEST_FILE = "manifest.json"
MANIFEST_SCHEMA = 1


class TensorSpec(BaseModel):
    name: str
    dtype: str  # numpy-style name: float32, int64, float16, ...
    shape: list[int | str]  # symbolic dims by name ("batch", "sequence", "past_sequence", "total_sequence")


class KVCache(BaseModel):
    num_layers: int
    num_kv_heads: int
    head_dim: int
    dtype: str = "float32"
    past_key: str = "past_key_values.{i}.key"
    past_value: str = "past_key_values.{i}.value"
    present_key: str = "present.{i}.key"
    present_value: str = "present.{i}.value"

    def past_names(self, i: int) -> tuple[str, str]:
        return self.past_key.format(i=i), self.past_value.format(i=i)

    def present_names(self, i: int) -> tuple[str, str]:
        return self.present_key.format(i=i), self.present_value.format(i=i)


class FileEntry(BaseModel):
    sha256: str
    bytes: int


class Manifest(BaseModel):
    model_config = ConfigDict(extra="allow")

    schema_version: int = MANIFEST_SCHEMA
    task: str
    source: str
    files: dict[str, FileEntry] = Field(default_factory=dict)
    inputs: list[TensorSpec] = Field(default_factory=list)
    outputs: list[TensorSpec] = Field(default_factory=list)
    kv_cache: KVCache | None = None
    preprocessing: dict[str, Any] = Field(default_factory=dict)
    postprocessing: dict[str, Any] = Field(default_factory=dict)
    parity: dict[str, dict[str, Any]] = Field(default_factory=dict)  # format -> figures
    optimization: dict[str, Any] | None = None  # {"fusions": {name: count}, ...}
    quantization: dict[str, Any] | None = None  # filled by the quantize stage
    executorch: dict[str, Any] | None = None  # delegated / non-delegated ops of model.pte
    ort_mobile: dict[str, Any] | None = None  # required-operators config of model.ort
    metrics: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def load(cls, folder: str | os.PathLike) -> "Manifest":
        path = Path(folder) / MANIFEST_FILE
        try:
            return cls.model_validate(json.loads(path.read_text()))
        except OSError as exc:
            raise EdgelmError(f"{path}: cannot read the export manifest ({exc.strerror}); re-run edgelm export") from None
        except (json.JSONDecodeError, ValidationError) as exc:
            raise EdgelmError(f"{path}: invalid export manifest ({str(exc).splitlines()[0]}); re-run edgelm export") from None

    def save(self, folder: str | os.PathLike) -> Path:
        path = Path(folder) / MANIFEST_FILE
        tmp = path.with_name(f".{MANIFEST_FILE}.tmp")
        tmp.write_text(json.dumps(self.model_dump(mode="json"), indent=2))
        os.replace(tmp, path)
        return path

    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]


def file_entries(folder: Path, names: list[str]) -> dict[str, FileEntry]:
    folder = Path(folder)
    return {n: FileEntry(sha256=sha256_file(folder / n), bytes=(folder / n).stat().st_size)
            for n in sorted(set(names)) if (folder / n).is_file()}


ARTIFACT_SUFFIXES = (".onnx", ".onnx.data", ".ort", ".pte")


def artifact_size_mb(folder: Path, manifest: Manifest) -> float:
    """Total size of the model artifacts (not tokenizer / config files) in MiB."""
    total = sum(e.bytes for n, e in manifest.files.items() if n.endswith(ARTIFACT_SUFFIXES))
    return round(total / 2**20, 3)


def refresh_file_hashes(folder: str | os.PathLike, names: list[str] | None = None) -> Manifest:
    """Re-hash the listed files (default: those already listed plus any artifact present) and save the manifest."""
    folder = Path(folder)
    manifest = Manifest.load(folder)
    if names is None:
        names = list(manifest.files) + [p.name for p in folder.iterdir() if p.name.endswith(ARTIFACT_SUFFIXES)]
    entries = file_entries(folder, [n for n in names if (folder / n).is_file()])
    manifest.files = entries
    manifest.metrics["size_mb"] = artifact_size_mb(folder, manifest)
    manifest.save(folder)
    return manifest
