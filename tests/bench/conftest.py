import pytest

from tests.bench.exports import make_export


@pytest.fixture(scope="session")
def tiny_export(tiny_model, tmp_path_factory):
    """A tiny BERT classifier exported to model.onnx + model.ort (built once per session)."""
    return make_export(tiny_model("bert", "sequence-classification"), tmp_path_factory.mktemp("export") / "export",
                       formats=("onnx", "ort"))


@pytest.fixture
def sentences(tmp_path):
    path = tmp_path / "dev.tsv"
    rows = ["label\tsentence"] + [f"{i % 2}\t{' '.join(['a good movie'] * (1 + i % 4))}" for i in range(12)]
    path.write_text("\n".join(rows) + "\n")
    return path
