import torch

from edgelm.models.bundle import ModelBundle
from edgelm.models.loading import load_bundle, load_model


def test_save_load_round_trip(tiny_model, tmp_path):
    bundle = load_model(str(tiny_model("llama")))
    changed = bundle.with_model(bundle.model).record("unit", {"x": 1})
    changed.save(tmp_path / "b")
    back = load_bundle(tmp_path / "b")
    assert back.task == "causal-lm" and back.history == [{"kind": "unit", "config": {"x": 1}}]
    ids = torch.tensor([[2, 5, 6]])
    with torch.no_grad():
        torch.testing.assert_close(bundle.model(ids).logits, back.model(ids).logits)
    assert back.tokenizer("the movie")["input_ids"] == bundle.tokenizer("the movie")["input_ids"]


def test_unchanged_model_is_referenced_not_copied(tiny_model, tmp_path):
    bundle = load_model(str(tiny_model("bert")))
    artifact = tmp_path / "b" / "model.onnx"
    artifact.parent.mkdir()
    artifact.write_bytes(b"x")
    bundle.derive(artifacts={"onnx": artifact}).save(tmp_path / "b")
    assert not (tmp_path / "b" / "model.safetensors").exists()
    back = load_bundle(tmp_path / "b")
    assert back.model_dir == tiny_model("bert").resolve() and back.artifacts["onnx"] == artifact.resolve()


def test_relative_paths_survive_a_rename(tiny_model, tmp_path):
    bundle = load_model(str(tiny_model("bert")))
    bundle.with_model(bundle.model).save(tmp_path / ".tmp")
    (tmp_path / ".tmp").rename(tmp_path / "final")
    back = load_bundle(tmp_path / "final")
    assert back.model_dir == (tmp_path / "final").resolve()


def test_derive_does_not_share_history(tiny_model):
    bundle = load_model(str(tiny_model("bert")))
    bundle.derive().record("a", {})
    assert bundle.history == []


def test_read_gives_the_record_without_weights_and_load_bundle_can_skip_them(tiny_model, tmp_path):
    bundle = load_model(str(tiny_model("bert")))
    bundle.with_model(bundle.model).record("unit", {}).save(tmp_path / "b")
    record = ModelBundle.read(tmp_path / "b")
    assert record.model is None and record.tokenizer is None and record.history == [{"kind": "unit", "config": {}}]
    light = load_bundle(tmp_path / "b", load_model=False)
    assert light.model is None and light.tokenizer("the movie")["input_ids"] == bundle.tokenizer("the movie")["input_ids"]
