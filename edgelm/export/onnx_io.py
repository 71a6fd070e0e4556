"""ONNX model files on disk: save in one file or with one `<name>.data` sidecar, list and size a model's files,
strip the exporter's per-node metadata. Shared by the graph rewrites here and the quantizers in techniques/."""

from __future__ import annotations

import os
from pathlib import Path

from edgelm.core.metrics import files_mb

TWO_GB = 2**31 - 2**26  # stay clear of protobuf's 2 GiB limit


def is_large(path: Path) -> bool:
    return sum(f.stat().st_size for f in Path(path).parent.glob(Path(path).name + "*")) > TWO_GB


def strip_node_metadata(path: Path) -> None:
    """The exporter's per-node metadata (stack traces, module scopes: ~3.5 MB on SmolLM2) helps debugging the
    float graph, not an app: the quantized artifact ships without it. External weights stay where they are."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    for node in model.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    onnx.save_model(model, str(path))


def save_model(model, dst: Path, external: bool = False) -> list[Path]:
    """Save as one file, or with one `<name>.data` sidecar when asked or when the weights pass the protobuf limit."""
    import onnx

    dst = Path(dst)
    data = dst.with_name(dst.name + ".data")
    for stale in (dst, data):  # also: onnx appends to an existing data file
        stale.unlink(missing_ok=True)
    if external or model.ByteSize() > TWO_GB:
        onnx.save_model(model, str(dst), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=data.name, size_threshold=1024)
        return [dst, data]
    onnx.save_model(model, str(dst))
    return [dst]


def model_files(path: str | os.PathLike) -> list[Path]:
    """An artifact file and its external-data file when it has one."""
    path = Path(path)
    return [p for p in (path, path.with_name(path.name + ".data")) if p.is_file()]


def size_mb(path: Path) -> float:
    """Model file(s) size in MB (10^6 bytes), as every `size_mb` (tokenizer files not counted)."""
    return files_mb(model_files(path))
