"""Fine-tune with PEFT (LoRA / prompt tuning / IA3) or fully; adapters merged for export. Placeholder until issue 6 lands: registered so recipes validate, refuses to run."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from edgelm.stages.base import Stage, StageConfig, not_implemented, register_stage


class FinetuneConfig(StageConfig):
    method: Literal["lora", "prompt", "ia3", "full"] = Field("lora", description="adaptation method")
    epochs: float = Field(1.0, gt=0, description="training epochs")
    max_samples: int | None = Field(None, gt=0, description="train on at most this many examples")


@register_stage
class FinetuneStage(Stage):
    kind = "finetune"
    Config = FinetuneConfig
    summary = "Fine-tune with PEFT (LoRA / prompt tuning / IA3) or fully; adapters merged for export"
    implemented = False
    run = not_implemented("finetune", "issue 6")
