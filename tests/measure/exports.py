from pathlib import Path

import pytest


def export_folder(model_dir: Path, out: Path, formats: tuple[str, ...]) -> Path:
    """An export folder made by the real export stage (model.onnx / .ort / .pte, manifest.json, edgelm.json)."""
    from edgelm.pipeline.runner import run_single
    from edgelm.core.stage import get_stage

    run_single("export", get_stage("export").Config(formats=list(formats)), str(model_dir), out)
    return out


@pytest.fixture(scope="session")
def tiny_export(tiny_model, tmp_path_factory):
    """A tiny BERT classifier exported to model.onnx + model.ort (built once per session)."""
    return export_folder(tiny_model("bert", "sequence-classification"), tmp_path_factory.mktemp("export") / "export",
                         ("onnx", "ort"))
