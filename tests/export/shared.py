"""One ONNX export per (arch, task) per test session, shared by tests/export, test_parity and test_generate."""

from __future__ import annotations

from pathlib import Path

_CACHE: dict = {}


def exported(tiny_model, tmp_path_factory, arch: str, task: str | None = None, optimize: bool = False):
    """(bundle, OnnxExport) for a tiny model; optimize=True fuses the graph in memory (as the export stage does)."""
    from edgelm.export.onnx import export_onnx
    from edgelm.models.loading import load_model

    key = (arch, task, optimize)
    if key not in _CACHE:
        bundle = load_model(str(tiny_model(arch, task)), task=task)
        out = Path(tmp_path_factory.mktemp(f"onnx-{arch}-{task or 'default'}-{'opt' if optimize else 'raw'}"))
        result = export_onnx(bundle, out, fuse=optimize)
        _CACHE[key] = (bundle, result)
    return _CACHE[key]
