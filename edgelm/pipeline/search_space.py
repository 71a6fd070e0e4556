"""The `search:` block of a recipe: what `edgelm search` varies, what it measures, how long it may take.

A parameter is named by the same dotted path `--set` uses (`stages.3.heads`, `bench.threads`), so a trial's recipe
is the base recipe plus one `--set` per sampled value. `stages.N.enabled: [true, false]` switches a stage on and off.
Choices are a list (categorical, any YAML values) or a range `{low, high, step}` / `{low, high, log: true}`.
Objectives are metric names from the vocabulary (edgelm.core.metrics), whose `better` gives the direction.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edgelm.core.errors import EdgelmError
from edgelm.core.metrics import metric

SPACES = Path(__file__).resolve().parents[1] / "recipes" / "search"
DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|min)?\s*$")
SECONDS_PER = {"s": 1, "m": 60, "min": 60, "h": 3600, None: 60}  # a bare number is minutes


def parse_budget(text: str | float | int) -> float:
    """'30m', '90s', '1.5h' or a bare number of minutes -> seconds."""
    match = DURATION.match(str(text))
    if not match or float(match.group(1)) <= 0:
        raise EdgelmError(f"budget {text!r}: use a positive duration such as 30m, 90s or 1h")
    return float(match.group(1)) * SECONDS_PER[match.group(2)]


class Range(BaseModel):
    model_config = ConfigDict(extra="forbid")
    low: float
    high: float
    step: float | None = Field(None, gt=0)
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self):
        if self.high < self.low:
            raise ValueError(f"high {self.high} is below low {self.low}")
        return self

    def integer(self) -> bool:
        return all(float(v).is_integer() for v in (self.low, self.high, self.step or 1)) and not self.log


class SearchConfig(BaseModel):
    """How `edgelm search` explores a recipe (see edgelm/recipes/search/ for the built-in spaces)."""

    model_config = ConfigDict(extra="forbid")
    space: dict[str, list[Any] | Range] = Field(default_factory=dict, description="dotted recipe key -> choices or range")
    objectives: list[str] = Field(default_factory=lambda: ["accuracy", "speedup", "size_mb"],
                                  description="metrics to optimise (direction from the metric vocabulary)")
    budget: str = Field("30m", description="wall-time budget for the whole study (30m, 90s, 1h)")
    trials: int | None = Field(None, gt=0, description="stop after this many trials (default: the budget decides)")
    sampler: str = Field("nsga2", pattern="^(nsga2|tpe|random)$", description="Optuna sampler")
    population: int = Field(8, ge=2, description="NSGA-II population size")
    set: list[str] = Field(default_factory=list, description="--set overrides applied to every trial (e.g. a "
                                                             "shorter bench)")
    sweep: list[str] = Field(default_factory=list, description="categorical parameters tried with every choice for "
                             "each new draw of the others (cheap ones of the last stages: their trials reuse the "
                             "earlier stages)")
    gates: dict[str, Any] = Field(default_factory=dict, description="gates every trial must pass where the recipe "
                                                                     "sets none (e.g. max_accuracy_drop: 1.0)")
    prefer: str | None = Field(None, description="the objective the chosen candidate is best on among the feasible "
                                                 "front (default: speedup or decode_tok_s when optimised, else the "
                                                 "second objective)")

    @field_validator("space")
    @classmethod
    def _choices(cls, space):
        for key, choices in space.items():
            if isinstance(choices, list) and not choices:
                raise ValueError(f"{key}: needs at least one choice")
        return space

    @model_validator(mode="after")
    def _sweep_is_categorical(self):
        for key in self.sweep:
            if not isinstance(self.space.get(key), list):
                raise ValueError(f"sweep: {key} is not a categorical parameter of the space")
        return self

    @field_validator("objectives")
    @classmethod
    def _known(cls, names):
        for name in names:
            if metric(name) is None or metric(name).better is None:
                raise ValueError(f"{name}: not a metric with a better direction (see docs/metrics.md)")
        return names

    @model_validator(mode="after")
    def _prefer_is_objective(self):
        if self.prefer is not None and self.prefer not in self.objectives:
            raise ValueError(f"prefer {self.prefer!r} is not one of the objectives {self.objectives}")
        return self

    def preferred(self) -> int:
        """Index of the objective the choice maximises (in its better direction)."""
        if self.prefer is not None:
            return self.objectives.index(self.prefer)
        speed = [i for i, name in enumerate(self.objectives) if name in ("speedup", "decode_tok_s")]
        return speed[0] if speed else min(1, len(self.objectives) - 1)

    def budget_seconds(self) -> float:
        return parse_budget(self.budget)

    def directions(self) -> list[str]:
        return ["maximize" if metric(name).better == "higher" else "minimize" for name in self.objectives]


def builtin_space_path(recipe_name: str | None) -> Path | None:
    """edgelm/recipes/search/<recipe>.yaml; a cpu/cuda recipe derived from the mobile one uses the mobile one's
    space, whose stage numbers it shares."""
    for name in (recipe_name, re.sub(r"-(cpu|cuda)\b", "-mobile", recipe_name or "")):
        if name and (SPACES / f"{name}.yaml").is_file():
            return SPACES / f"{name}.yaml"
    return None


def builtin_space(recipe_name: str | None) -> SearchConfig | None:
    """The built-in search block for a default recipe, if there is one."""
    path = builtin_space_path(recipe_name)
    return SearchConfig.model_validate(yaml.safe_load(path.read_text())) if path else None


def suggest(trial, space: dict[str, list[Any] | Range]) -> dict[str, Any]:
    """One value per parameter from an Optuna trial. Categorical choices travel as JSON text (Optuna stores only
    scalars), so lists and mappings are choices too."""
    return {key: _suggest_one(trial, key, choices) for key, choices in space.items()}


def _suggest_one(trial, key: str, choices):
    if isinstance(choices, list):
        return json.loads(trial.suggest_categorical(key, [json.dumps(c) for c in choices]))
    if choices.integer():
        return trial.suggest_int(key, int(choices.low), int(choices.high), step=int(choices.step or 1))
    return trial.suggest_float(key, choices.low, choices.high, step=choices.step, log=choices.log)


def overrides(params: dict[str, Any]) -> list[str]:
    """The `--set` lines for sampled values; a mapping value sets each of its keys (so `stages.6: {method: int4,
    block_size: 64}` changes those two and keeps the stage's kind). JSON is YAML, so every value round-trips."""
    lines = []
    for key, value in params.items():
        items = value.items() if isinstance(value, dict) else [(None, value)]
        lines += [f"{key}{'.' + sub if sub else ''}={json.dumps(v)}" for sub, v in items]
    return lines


def drop_disabled(raw: dict) -> dict:
    """Remove stages whose `enabled` is false (and the key itself from the others)."""
    stages = [dict(s) for s in raw.get("stages", []) if not (isinstance(s, dict) and s.get("enabled") is False)]
    for stage in stages:
        stage.pop("enabled", None)
    return {**raw, "stages": stages}
