"""edgelm.train.trainer: the shared Trainer loop (fine-tuning and distillation build on it)."""

from __future__ import annotations

import pytest
import torch

from edgelm.core.errors import EdgelmError
from edgelm.train.trainer import PadCollator, TrainConfig, accuracy_metric, param_groups, resolve_precision, train

WORDS = "one two three good bad movie".split()


def tiny_classifier(tiny_model):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = tiny_model("bert", "sequence-classification")
    return AutoModelForSequenceClassification.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)


def toy_data(tok, n=48):
    texts = [("a great fun movie" if i % 2 else "a boring bad film") + f" {WORDS[i % 6]}" for i in range(n)]
    return [dict(tok(t), labels=i % 2) for i, t in enumerate(texts)]


def weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def run(tiny_model, tmp_path, name="ckpt", **overrides):
    model, tok = tiny_classifier(tiny_model)
    data = toy_data(tok)
    cfg = TrainConfig(**{**dict(epochs=1, learning_rate=5e-3, batch_size=8, metric="accuracy", save_steps=100), **overrides})
    result = train(model, data[:40], data[40:], cfg, workdir=tmp_path / name, collate_fn=PadCollator(tok.pad_token_id),
                   metric_fn=accuracy_metric, keep_checkpoints=overrides.pop("keep", False))
    return model, result


def test_train_learns_and_reports_best_eval(tiny_model, tmp_path):
    model, result = run(tiny_model, tmp_path, epochs=2, learning_rate=1e-2)
    assert result.metrics["accuracy"] == 100.0  # percentage points
    assert result.steps == 10 and result.best_step is not None
    evals = [h for h in result.history if "eval_loss" in h]
    assert len(evals) == 2, "one evaluation per epoch"
    assert evals[-1]["eval_loss"] < evals[0]["eval_loss"]
    assert not (tmp_path / "ckpt").exists(), "checkpoints are removed after success by default"


def test_train_is_reproducible(tiny_model, tmp_path):
    a, _ = run(tiny_model, tmp_path, "a")
    b, _ = run(tiny_model, tmp_path, "b")
    for key, value in weights(a).items():
        torch.testing.assert_close(value, weights(b)[key], rtol=0, atol=0)


class Interrupt(Exception):
    pass


def test_train_resumes_after_interruption(tiny_model, tmp_path):
    from transformers import TrainerCallback

    class StopAt(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 5:
                raise Interrupt()

    reference, _ = run(tiny_model, tmp_path, "ref", epochs=2)
    model, tok = tiny_classifier(tiny_model)
    data = toy_data(tok)
    cfg = TrainConfig(epochs=2, learning_rate=5e-3, batch_size=8, metric="accuracy", save_steps=4)
    with pytest.raises(Interrupt):
        train(model, data[:40], data[40:], cfg, workdir=tmp_path / "ckpt", collate_fn=PadCollator(0),
              metric_fn=accuracy_metric, callbacks=[StopAt()])
    assert (tmp_path / "ckpt" / "checkpoint-4").is_dir()
    model, tok = tiny_classifier(tiny_model)  # a fresh process would start from the base weights again
    result = train(model, data[:40], data[40:], cfg, workdir=tmp_path / "ckpt", collate_fn=PadCollator(0),
                   metric_fn=accuracy_metric)
    assert result.resumed_from_step == 4 and result.steps == 10
    for key, value in weights(reference).items():
        torch.testing.assert_close(weights(model)[key], value, rtol=1e-5, atol=1e-6)


def test_early_stopping_stops_on_a_plateau(tiny_model, tmp_path):
    _, result = run(tiny_model, tmp_path, epochs=2, learning_rate=1e-12, warmup_ratio=0.0, eval_steps=1,
                    early_stopping_patience=2, metric="loss")
    assert result.steps <= 4, f"should stop after two evaluations without improvement, ran {result.steps} steps"


def test_custom_loss_and_lr_overrides(tiny_model, tmp_path):
    calls = []

    def loss_fn(model, inputs):
        calls.append(1)
        out = model(**{k: v for k, v in inputs.items() if k != "labels"})
        return torch.nn.functional.cross_entropy(out.logits, inputs["labels"]), out

    model, tok = tiny_classifier(tiny_model)
    groups = param_groups(model, 1e-4, 0.01, {"classifier": 1e-2})
    assert {g["lr"] for g in groups} == {1e-4, 1e-2}
    assert all(g["weight_decay"] == 0.0 for g in groups if any(p.ndim < 2 for p in g["params"]))
    data = toy_data(tok, 16)
    result = train(model, data, None, TrainConfig(max_steps=2, batch_size=8), workdir=tmp_path / "c",
                   collate_fn=PadCollator(0), compute_loss=loss_fn)
    assert len(calls) == 2 and result.metrics == {}


def test_pad_collator_pads_per_batch():
    batch = PadCollator(pad_id=9)([{"input_ids": [1, 2, 3], "attention_mask": [1, 1, 1], "labels": [4, 5, 6]},
                                   {"input_ids": [1], "attention_mask": [1], "labels": [4]}])
    assert batch["input_ids"].tolist() == [[1, 2, 3], [1, 9, 9]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[4, 5, 6], [4, -100, -100]]
    scalar = PadCollator(0)([{"input_ids": [1], "labels": 1}, {"input_ids": [2, 3], "labels": 0}])
    assert scalar["labels"].tolist() == [1, 0]


def test_precision_choices():
    assert resolve_precision("fp32") == "fp32"
    assert resolve_precision("auto") in ("fp32", "bf16", "fp16")
    if not torch.cuda.is_available():
        with pytest.raises(EdgelmError, match="fp16"):
            resolve_precision("fp16")
    with pytest.raises(EdgelmError, match="precision"):
        TrainConfig(precision="int8")


def test_bf16_trained_model_computes_in_its_own_dtype(tiny_model, tmp_path):
    """Mixed precision wraps forward in autocast during training; the returned model must not keep that wrapper,
    or it computes differently from the same weights saved and reloaded."""
    model, _ = run(tiny_model, tmp_path, precision="bf16")
    assert "_original_forward" not in model.__dict__
    fresh, _ = tiny_classifier(tiny_model)
    fresh.load_state_dict(model.state_dict())
    ids = torch.tensor([[2, 5, 6, 7, 3]])
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(input_ids=ids).logits, fresh.eval()(input_ids=ids).logits, rtol=0, atol=0)
