"""Evaluate accuracy / perplexity / ICL / embedding fidelity. Placeholder until issue 8 lands: registered so recipes validate, refuses to run."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from edgelm.stages.base import Stage, StageConfig, not_implemented, register_stage


class EvalConfig(StageConfig):
    metrics: list[Literal["accuracy", "perplexity", "icl", "fidelity"]] = Field(default_factory=list, description="metrics to compute (default: by task)", json_schema_extra={"cli": "--metric"})


@register_stage
class EvalStage(Stage):
    kind = "eval"
    Config = EvalConfig
    summary = "Evaluate accuracy / perplexity / ICL / embedding fidelity"
    implemented = False
    run = not_implemented("eval", "issue 8")
