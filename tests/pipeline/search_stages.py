"""Test-only stages for the search tests: a costly prefix stage that counts its runs (in a file, so worker
processes count too) and a stage whose metrics are its parameters, so every objective is known in advance."""

from __future__ import annotations

import copy
import os
from pathlib import Path

from pydantic import Field

from edgelm.core.stage import REGISTRY, Stage, StageConfig, StageResult, register_stage

CALLS_FILE = "EDGELM_TEST_SEARCH_CALLS"


def count_call(kind: str) -> None:
    path = os.environ.get(CALLS_FILE)
    if path:
        with open(path, "a") as handle:
            handle.write(kind + "\n")


def calls(path: Path, kind: str) -> int:
    return path.read_text().split().count(kind) if path.is_file() else 0


class PrefixConfig(StageConfig):
    tag: str = Field("base", description="a setting the prefix depends on")


class PrefixStage(Stage):
    kind = "unit-prefix"
    Config = PrefixConfig
    summary = "test-only costly prefix"

    def run(self, bundle, config, ctx):
        count_call(self.kind)
        return StageResult(bundle.with_model(copy.deepcopy(bundle.model)), {"n": 1})


class FiguresConfig(StageConfig):
    quality: float = Field(80.0, description="reported as accuracy")
    speed: float = Field(1.0, description="reported as speedup on ort-cpu")
    drop: float = Field(0.0, description="reported as accuracy_drop_pt")


class FiguresStage(Stage):
    kind = "unit-figures"
    Config = FiguresConfig
    summary = "test-only figures"

    def run(self, bundle, config, ctx):
        count_call(self.kind)
        metrics = {"accuracy": config.quality, "speedup": {"ort-cpu": config.speed}, "accuracy_drop_pt": config.drop}
        return StageResult(bundle.derive(), metrics)


def register() -> None:
    for stage in (PrefixStage, FiguresStage):
        if stage.kind not in REGISTRY:
            register_stage(stage)


def unregister() -> None:
    for stage in (PrefixStage, FiguresStage):
        REGISTRY.pop(stage.kind, None)
