"""The training settings every training stage (finetune, distill) takes, and the TrainConfig built from them.

A stage config inherits `TrainingFields` next to StageConfig, so the recipe keys, CLI flags and help texts are
declared once. Only pydantic is imported here: stage configs load with the CLI, the trainer (torch) on use.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field
from pydantic.fields import FieldInfo

from edgelm.train.precision import Precision


class TrainingFields(BaseModel):
    epochs: float = Field(1.0, gt=0, description="training epochs")
    max_samples: int | None = Field(None, gt=0, description="train on at most this many examples (random, seeded)")
    batch_size: int = Field(32, gt=0, description="examples per device and step")
    grad_accumulation: int = Field(1, gt=0, description="steps whose gradients add up before an update")
    warmup_ratio: float = Field(0.06, ge=0, lt=1, description="fraction of steps with linear warmup")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay (not on biases and norms)")
    max_length: int = Field(128, gt=1, description="tokens per example (longer ones are truncated)")
    eval_fraction: float = Field(0.1, ge=0, lt=1, description="held-out share of --data when no --eval-data "
                                 "(0: no evaluation)")
    select_on: Literal["eval-data", "held-out"] = Field(
        "eval-data", description="what picks the best weights and early stopping: the run's --eval-data, or "
        "held-out (an eval_fraction share of --data, so the eval data stays unseen until the eval stage)")
    eval_steps: int | None = Field(None, gt=0, description="evaluate every N steps (default: each epoch)")
    early_stopping_patience: int | None = Field(None, gt=0, description="stop after N evaluations without improvement")
    save_steps: int = Field(200, gt=0, description="resumable checkpoint every N steps")
    precision: Precision = Field("auto", description="auto: bf16 on CUDA (fp16 without "
                                                               "bf16) and on CPUs with native bf16, else fp32")

    def selection_data(self, eval_data):
        """The eval data training selects on: the run's, or None (a held-out share of --data) for held-out."""
        return None if self.select_on == "held-out" else eval_data

    def train_config(self, **settings):
        """The trainer's TrainConfig: every field of this config that TrainConfig has, then `settings` on top."""
        from dataclasses import fields

        from edgelm.train.trainer import TrainConfig

        names = {f.name for f in fields(TrainConfig)}
        given = {name: getattr(self, name) for name in type(self).model_fields if name in names}
        return TrainConfig(**{**given, **settings})


def reworded(name: str, description: str) -> FieldInfo:
    """TrainingFields' field `name` (type, default, bounds) under a stage's own help text."""
    return FieldInfo.merge_field_infos(TrainingFields.model_fields[name], description=description)
