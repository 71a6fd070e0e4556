import json
import shutil

import pytest

from edgelm.core.errors import EdgelmError
from edgelm.models.loading import detect_task, load_model, model_info, validate_safetensors
from tests.conftest import require_builtin
from tests.tiny import DECODERS, ENCODERS


@pytest.mark.parametrize("arch", ENCODERS + DECODERS)
def test_task_detected_from_config(arch, tiny_model):
    bundle = load_model(str(tiny_model(arch)))
    assert bundle.task == ("causal-lm" if arch in DECODERS else "feature-extraction")
    assert bundle.tokenizer is not None and bundle.tokenizer.pad_token is not None


def test_sequence_classification_head_detected(tiny_model):
    bundle = load_model(str(tiny_model("bert", "sequence-classification", num_labels=3)))
    assert bundle.task == "sequence-classification"
    assert bundle.labels == ["LABEL_0", "LABEL_1", "LABEL_2"]


def test_task_override_builds_a_new_head(tiny_model):
    bundle = load_model(str(tiny_model("bert")), task="sequence-classification")
    assert bundle.task == "sequence-classification"
    assert bundle.model.config.num_labels == 2


def test_info_reports_shapes(tiny_model):
    facts = model_info(load_model(str(tiny_model("llama"))))
    assert facts["layers"] == 2 and facts["heads"] == 4 and facts["kv_heads"] == 2 and facts["hidden"] == 32
    assert facts["params"] == sum(p.numel() for p in load_model(str(tiny_model("llama"))).model.parameters())


def test_nonexistent_path():
    with pytest.raises(EdgelmError, match="no such file"):
        load_model("./does/not/exist")


def test_folder_without_config(tmp_path):
    with pytest.raises(EdgelmError, match="no config.json"):
        load_model(str(tmp_path))


def test_truncated_safetensors(tiny_model, tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(tiny_model("bert"), folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(EdgelmError, match="truncated safetensors"):
        load_model(str(folder))


def test_garbage_safetensors_header(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"\xff" * 8 + b"{}")
    with pytest.raises(EdgelmError, match="not a valid safetensors"):
        validate_safetensors(path)


def test_pickle_weights_refused_without_flag(tiny_model, tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(tiny_model("bert"), folder)
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"not really a pickle")
    with pytest.raises(EdgelmError, match="--allow-pickle"):
        load_model(str(folder))


def test_unknown_architecture(tiny_model, tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(tiny_model("bert"), folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["model_type"] = "definitely-not-a-model"
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(EdgelmError, match="unknown or custom architecture"):
        load_model(str(folder))


def test_bad_gguf_header(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_bytes(b"NOPE" + b"\0" * 64)
    with pytest.raises(EdgelmError, match="not a GGUF file"):
        load_model(str(path))


def test_hub_id_offline_is_one_clear_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(EdgelmError, match="could not fetch from the Hugging Face hub") as info:
        load_model("some-org/some-model-that-is-not-local")
    assert "\n" not in str(info.value)


def test_detect_task_for_bare_config():
    from transformers import AutoConfig

    assert detect_task(AutoConfig.for_model("llama")) == "causal-lm"
    assert detect_task(AutoConfig.for_model("bert")) == "feature-extraction"


@pytest.mark.real
def test_real_minilm_info():
    require_builtin("minilm-l6")
    facts = model_info(load_model("minilm-l6"))
    assert facts["params_m"] == 22.71 and facts["task"] == "feature-extraction"
    assert facts["pooling"] == {"mode": "mean", "normalize": True}


@pytest.mark.real
def test_real_smollm2_info_from_gguf():
    require_builtin("smollm2-135m")
    facts = model_info(load_model("smollm2-135m"))
    assert facts["params"] == 134_515_008 and facts["task"] == "causal-lm"
    assert (facts["heads"], facts["kv_heads"], facts["layers"]) == (9, 3, 30)
