"""Factorize Linear layers by truncated (activation-aware) SVD. Placeholder until issue 7 lands: registered so recipes validate, refuses to run."""

from __future__ import annotations

from pydantic import Field

from edgelm.stages.base import Stage, StageConfig, not_implemented, register_stage


class LowrankConfig(StageConfig):
    ratio: float | None = Field(None, gt=0, lt=1, description="fraction of parameters to remove from factorized layers")
    energy: float | None = Field(None, gt=0, le=1, description="keep this fraction of singular-value energy per layer")


@register_stage
class LowrankStage(Stage):
    kind = "lowrank"
    Config = LowrankConfig
    summary = "Factorize Linear layers by truncated (activation-aware) SVD"
    implemented = False
    run = not_implemented("lowrank", "issue 7")
