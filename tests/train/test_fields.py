"""edgelm.train.fields: the training settings the finetune and distill configs share, turned into a TrainConfig."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from edgelm.techniques.distill.stage import DistillConfig
from edgelm.techniques.finetune.stage import FinetuneConfig, train_config
from edgelm.train.fields import TrainingFields

SET = dict(epochs=2.5, batch_size=4, grad_accumulation=3, warmup_ratio=0.2, weight_decay=0.1, precision="fp32",
           eval_steps=5, save_steps=7, early_stopping_patience=2)


@pytest.mark.parametrize("config_cls", [FinetuneConfig, DistillConfig])
def test_both_training_stages_take_every_shared_field(config_cls):
    assert set(TrainingFields.model_fields) <= set(config_cls.model_fields)
    cfg = config_cls(**SET, max_samples=9, max_length=16, eval_fraction=0.3).train_config(seed=3, description="x")
    assert {k: getattr(cfg, k) for k in SET} == SET and (cfg.seed, cfg.description) == (3, "x")


def test_stage_fields_the_trainer_knows_pass_through_and_settings_win():
    cfg = DistillConfig(max_steps=11, learning_rate=1e-3).train_config(metric="accuracy")
    assert (cfg.max_steps, cfg.learning_rate, cfg.metric) == (11, 1e-3, "accuracy")
    tuned = train_config(FinetuneConfig(method="ia3"), "causal-lm", [], seed=1)
    assert (tuned.learning_rate, tuned.max_steps, tuned.metric) == (5e-3, None, "loss")


def test_a_reworded_field_keeps_its_default_and_bounds():
    assert DistillConfig.model_fields["batch_size"].description == "examples per step"
    assert FinetuneConfig.model_fields["batch_size"].description == "examples per device and step"
    assert DistillConfig().batch_size == FinetuneConfig().batch_size == 32
    with pytest.raises(ValidationError):
        DistillConfig(batch_size=0)
    with pytest.raises(ValidationError):
        DistillConfig(precision="fp8")
