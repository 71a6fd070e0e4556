"""Knowledge distillation from a teacher (logits KL + hidden-state MSE). Placeholder until issue 7 lands: registered so recipes validate, refuses to run."""

from __future__ import annotations

from pydantic import Field

from edgelm.stages.base import Stage, StageConfig, not_implemented, register_stage


class DistillConfig(StageConfig):
    teacher: str | None = Field(None, description="teacher MODEL (default: the run's input model)")
    epochs: float = Field(1.0, gt=0, description="training epochs")


@register_stage
class DistillStage(Stage):
    kind = "distill"
    Config = DistillConfig
    summary = "Knowledge distillation from a teacher (logits KL + hidden-state MSE)"
    implemented = False
    run = not_implemented("distill", "issue 7")
