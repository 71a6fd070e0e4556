"""The artifact formats an export folder can hold: the one table the export stage's `formats`, the manifest's
sizes, the runtimes' lookups (bench, eval) and the app bundle's model choice read."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ArtifactFormat:
    name: str
    file: str  # its file name in an export folder
    writer: str  # "module:function" of the export writer that makes it
    engine: str  # the library that loads it; formats of one engine are alternatives to each other
    sidecars: tuple[str, ...] = ()  # suffixes of the files that belong to it (external weights)


FORMATS = {f.name: f for f in (
    ArtifactFormat("onnx", "model.onnx", "edgelm.export.onnx:export_onnx", "onnxruntime", (".data",)),
    ArtifactFormat("ort", "model.ort", "edgelm.export.ort_mobile:convert_to_ort", "onnxruntime"),
    ArtifactFormat("pte", "model.pte", "edgelm.export.executorch:export_pte", "executorch"),
    ArtifactFormat("gguf", "model.gguf", "edgelm.export.gguf:export_gguf", "llama.cpp"),
)}
PREFERRED = ("ort", "onnx", "pte", "gguf")  # which artifact an app ships, and eval's `auto` runs, when there are several


def shipped_formats(available) -> list[str]:
    """Of the `available` formats, the preferred one per engine (.ort over .onnx, plus .pte), preferred first."""
    chosen: dict[str, str] = {}
    for fmt in PREFERRED:
        if fmt in available:
            chosen.setdefault(FORMATS[fmt].engine, fmt)
    return list(chosen.values())


def with_sidecars(fmt: str, path: Path) -> list[Path]:
    """The artifact file and the files beside it that belong to it (model.onnx + model.onnx.data)."""
    return [path, *(f for suffix in FORMATS[fmt].sidecars for f in sorted(path.parent.glob(path.name + suffix)))]
