"""Benchmark latency on CPU, CUDA and mobile-class runtimes. Placeholder until issue 4 lands: registered so recipes validate, refuses to run."""

from __future__ import annotations

from pydantic import Field

from edgelm.stages.base import Stage, StageConfig, not_implemented, register_stage


class BenchConfig(StageConfig):
    runtimes: list[str] = Field(default_factory=lambda: ["ort-cpu"], description="runtimes to time", json_schema_extra={"cli": "--runtime"})


@register_stage
class BenchStage(Stage):
    kind = "bench"
    Config = BenchConfig
    summary = "Benchmark latency on CPU, CUDA and mobile-class runtimes"
    implemented = False
    run = not_implemented("bench", "issue 4")
