"""Structured pruning of heads, FFN neurons and layers. Placeholder until issue 7 lands: registered so recipes validate, refuses to run."""

from __future__ import annotations

from pydantic import Field

from edgelm.stages.base import Stage, StageConfig, not_implemented, register_stage


class PruneConfig(StageConfig):
    heads: float | None = Field(None, ge=0, lt=1, description="fraction of attention heads to remove")
    ffn: float | None = Field(None, ge=0, lt=1, description="fraction of FFN neurons to remove")
    drop_layers: int | None = Field(None, ge=0, description="number of whole layers to drop")


@register_stage
class PruneStage(Stage):
    kind = "prune"
    Config = PruneConfig
    summary = "Structured pruning of heads, FFN neurons and layers"
    implemented = False
    run = not_implemented("prune", "issue 7")
