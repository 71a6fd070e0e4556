import pytest

from tests.bench.exports import make_export


@pytest.fixture(scope="session")
def tiny_export(tiny_model, tmp_path_factory):
    """A tiny BERT classifier exported to model.onnx + model.ort (built once per session)."""
    return make_export(tiny_model("bert", "sequence-classification"), tmp_path_factory.mktemp("export") / "export",
                       formats=("onnx", "ort"))

