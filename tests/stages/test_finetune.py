"""finetune stage: adapter targets per architecture, learning, merge/fold for export, PEFT adapter, bad data."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from edgelm.models.bundle import ModelBundle
from edgelm.data.readers import DataConfig
from edgelm.core.errors import EdgelmError
from edgelm.models.loading import load_bundle, load_model
from edgelm.pipeline.run import run_one
from edgelm.core.stage import StageContext, get_stage
from edgelm.techniques.finetune.stage import adapter_targets, checkpoint_dir
from edgelm.models.tasks import task_module
from edgelm.models.text_tasks import chat_features, completion_features
from tests.stages.test_all_stages import LABELLED, TEXT
from tests.tiny import DECODERS, ENCODERS, TINY_CONFIGS


def finetune(model_dir, tmp_path, config: dict, data: str, task=None, name="run"):
    bundle = load_model(str(model_dir), task=task)
    path = tmp_path / f"{name}.data{'.tsv' if data == LABELLED else '.txt'}"
    path.write_text(data)
    stage = get_stage("finetune")
    ctx = StageContext(workdir=tmp_path / f".{name}.tmp", data=DataConfig(path=str(path)), run_dir=tmp_path,
                       initial_bundle=lambda: bundle)
    record, out = run_one("finetune", stage.Config.model_validate(config), bundle, ctx, tmp_path / name, "h")
    return record.metrics, out


@pytest.mark.parametrize("arch", sorted(TINY_CONFIGS))
def test_adapter_targets_found_in_every_architecture(arch, tiny_model):
    bundle = load_model(str(tiny_model(arch)))
    found = adapter_targets(bundle.model, [])
    assert len(found) >= 4 * 2, f"{arch}: expected attention + MLP projections in 2 blocks, got {sorted(found)}"
    assert not any(k in name for name in found for k in ("pooler", "lm_head", "classifier", "embed"))
    assert any(i > o for i, o in found.values()), f"{arch}: no MLP down projection (in > out) for IA3"
    layer0 = sorted(n for n in found if ".0." in n)
    assert len(layer0) == len(found) // 2, "both blocks adapted alike"


def test_target_modules_override(tiny_model):
    model = load_model(str(tiny_model("llama"))).model
    chosen = adapter_targets(model, ["q_proj", "v_proj"])
    assert sorted({n.rsplit(".", 1)[-1] for n in chosen}) == ["q_proj", "v_proj"] and len(chosen) == 4
    with pytest.raises(EdgelmError, match="available: .*q_proj"):
        adapter_targets(model, ["query"])


def test_lora_turns_an_embedder_into_a_trained_classifier(tiny_model, tmp_path):
    from peft import PeftModel

    from edgelm.techniques.finetune.stage import as_classifier

    metrics, out = finetune(tiny_model("bert"), tmp_path, {"method": "lora", "epochs": 4, "learning_rate": 1e-2,
                                                            "batch_size": 8, "eval_fraction": 0.2}, LABELLED)
    assert out.task == "sequence-classification" and out.labels == ["0", "1"] and "pooling" not in out.extra
    assert metrics["accuracy"] == 100.0 and metrics["eval_accuracy"] == 100.0  # percentage points
    assert metrics["export_max_abs_diff"] < 1e-5
    assert not any("lora" in n for n, _ in out.model.named_parameters()), "LoRA must be merged away"
    # the PEFT adapter reproduces the merged model on a fresh classifier built from the same base
    base = as_classifier(load_model(str(tiny_model("bert"))), ["0", "1"]).eval()
    peft_model = PeftModel.from_pretrained(base, tmp_path / "run" / "adapter").eval()
    ids = torch.tensor([[2, 10, 11, 3], [2, 12, 13, 3]])
    with torch.no_grad():
        torch.testing.assert_close(peft_model(input_ids=ids).logits, out.model(input_ids=ids).logits, rtol=1e-4, atol=1e-5)


def test_prompt_tuning_is_folded_and_survives_save_load(tiny_model, tmp_path):
    metrics, out = finetune(tiny_model("llama"), tmp_path, {"method": "prompt", "num_virtual_tokens": 3,
                                                             "batch_size": 16}, TEXT)
    assert out.extra["prompt_tuning"]["num_virtual_tokens"] == 3
    assert metrics["export_max_abs_diff"] < 1e-5 and metrics["eval_perplexity"] > 1
    reloaded = load_bundle(tmp_path / "run")
    ids = torch.tensor([[2, 10, 11, 12]])
    mask = torch.ones_like(ids)
    module, plain = task_module(reloaded), task_module(ModelBundle(reloaded.model, None, "causal-lm", "x"))
    with torch.no_grad():
        got = module(input_ids=ids, attention_mask=mask)
        without = plain(input_ids=ids, attention_mask=mask)
    assert type(module).__name__ == "PromptPrefixed" and got.shape == without.shape
    with torch.no_grad():
        torch.testing.assert_close(got, task_module(out)(input_ids=ids, attention_mask=mask))
    assert not torch.allclose(got, without), "the virtual tokens must change the output"


def test_decoder_learns_label_words(tiny_model, tmp_path):
    metrics, out = finetune(tiny_model("llama"), tmp_path, {"method": "ia3", "label_words": ["bad", "good"],
                                                            "learning_rate": 5e-2, "epochs": 3, "batch_size": 8}, LABELLED)
    assert out.task == "causal-lm"
    assert {"zero_shot_accuracy", "accuracy"} <= set(metrics) and metrics["accuracy"] >= metrics["zero_shot_accuracy"]
    assert metrics["export_max_abs_diff"] < 1e-5


def test_numeric_labels_on_a_decoder_need_label_words(tiny_model, tmp_path):
    with pytest.raises(EdgelmError, match="--label-words"):
        finetune(tiny_model("llama"), tmp_path, {"method": "lora"}, LABELLED)


def test_completion_and_chat_features_mask_the_prompt(tiny_model):
    tok = load_model(str(tiny_model("llama"))).tokenizer
    (feat,) = completion_features(tok, ["the movie was"], [" good"], max_length=32)
    n_prompt = len(tok("the movie was")["input_ids"])
    assert feat["labels"][:n_prompt] == [-100] * n_prompt
    assert feat["labels"][n_prompt:] == feat["input_ids"][n_prompt:] == [tok.convert_tokens_to_ids("good"), tok.eos_token_id]
    with pytest.raises(EdgelmError, match="chat template"):
        chat_features(tok, [[{"role": "user", "content": "hi"}]], 32)
    tok.chat_template = "{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} . {% endfor %}" \
                        "{% if add_generation_prompt %}assistant : {% endif %}"
    conv = [{"role": "user", "content": "the movie"}, {"role": "assistant", "content": "good"},
            {"role": "user", "content": "and the plot"}, {"role": "assistant", "content": "bad"}]
    (feat,) = chat_features(tok, [conv], 64)
    learned = tok.convert_ids_to_tokens([i for i, y in zip(feat["input_ids"], feat["labels"]) if y != -100])
    assert learned == ["good", ".", "bad", "."]


def test_checkpoint_folder_is_stable_and_keyed_by_config(tiny_model, tmp_path):
    stage = get_stage("finetune")
    bundle = load_model(str(tiny_model("bert")))
    ctx = StageContext(workdir=tmp_path / ".02-finetune.tmp", data=DataConfig(path="x.tsv"), seed=1)
    a = checkpoint_dir(bundle, stage.Config(), ctx)
    a.mkdir()
    assert checkpoint_dir(bundle, stage.Config(), ctx) == a and a.parent == tmp_path and a.name.startswith(".02-finetune.ckpt")
    b = checkpoint_dir(bundle, stage.Config(epochs=2), ctx)
    assert b != a and not a.exists(), "checkpoints of another configuration are stale and removed"


BAD_DATA = {
    "missing label column": ("data.tsv", "sentence\na good movie\na bad film\n", "label column"),
    "labels not integers or names": ("data.jsonl", '{"text": "good", "label": 0.5}\n{"text": "bad", "label": 1.5}\n', "labels must be"),
    "empty file": ("data.tsv", "", "no examples"),
    "text column absent": ("data.tsv", "label\tfoo\n1\tgood\n0\tbad\n", "no text column"),
}


@pytest.mark.parametrize("case", sorted(BAD_DATA))
def test_bad_data_is_one_clear_line_exit_2(case, tiny_model, tmp_path):
    from edgelm.cli import main

    name, content, message = BAD_DATA[case]
    (tmp_path / name).write_text(content)
    result = CliRunner().invoke(main, ["finetune", str(tiny_model("bert")), "--data", str(tmp_path / name),
                                       "-o", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], result.output
    assert "Traceback" not in result.output


def test_missing_data_is_a_clear_error(tiny_model, tmp_path):
    from edgelm.cli import main

    result = CliRunner().invoke(main, ["finetune", str(tiny_model("bert")), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2 and "needs training data" in result.output


def test_cli_finetune_json(tiny_model, tmp_path):
    from edgelm.cli import main

    (tmp_path / "d.tsv").write_text(LABELLED)
    result = CliRunner().invoke(main, ["finetune", str(tiny_model("distilbert")), "--data", str(tmp_path / "d.tsv"),
                                       "-o", str(tmp_path / "out"), "--method", "full", "--max-samples", "20",
                                       "--batch-size", "8", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output[result.output.index("{"):])
    assert payload["metrics"]["samples"] == 18 and payload["metrics"]["method"] == "full"
    assert load_bundle(tmp_path / "out").task == "sequence-classification"


@pytest.mark.parametrize("arch", ENCODERS[:1] + DECODERS[:1])
def test_input_bundle_is_not_mutated(arch, tiny_model, tmp_path):
    bundle = load_model(str(tiny_model(arch)))
    before = {k: v.clone() for k, v in bundle.model.state_dict().items()}
    stage = get_stage("finetune")
    data = tmp_path / ("d.txt" if arch in DECODERS else "d.tsv")
    data.write_text(TEXT if arch in DECODERS else LABELLED)
    ctx = StageContext(workdir=tmp_path / "w", data=DataConfig(path=str(data)))
    ctx.workdir.mkdir()
    stage().run(bundle, stage.Config(max_samples=8), ctx)
    assert all(torch.equal(v, bundle.model.state_dict()[k]) for k, v in before.items())
    assert not any("lora" in n for n, _ in bundle.model.named_modules())


def test_chat_data_trains_a_decoder(tiny_model, tmp_path):
    import shutil

    from edgelm.models.loading import load_tokenizer

    folder = shutil.copytree(tiny_model("llama"), tmp_path / "chat-llama")
    tok = load_tokenizer(folder)
    tok.chat_template = "{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} . {% endfor %}" \
                        "{% if add_generation_prompt %}assistant : {% endif %}"
    tok.save_pretrained(folder)
    rows = [{"messages": [{"role": "user", "content": "the movie"}, {"role": "assistant", "content": w}]}
            for w in ("good", "bad") * 10]
    data = tmp_path / "chat.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    bundle = load_model(str(folder))
    stage = get_stage("finetune")
    ctx = StageContext(workdir=tmp_path / "w", data=DataConfig(path=str(data)))
    ctx.workdir.mkdir()
    result = stage().run(bundle, stage.Config(batch_size=8, eval_fraction=0.2), ctx)
    assert result.metrics["samples"] == 16 and result.metrics["eval_samples"] == 4
    assert result.metrics["eval_loss"] > 0 and result.metrics["export_max_abs_diff"] < 1e-5
