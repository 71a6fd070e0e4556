"""Recipes: YAML -> validated, typed steps. Unknown keys and bad values are rejected naming the field.

A recipe is `model`, `task`, `data`, an ordered `stages:` list of `{kind, ...}`, and optional `export`, `eval`,
`bench` sections (each validated by the stage of that kind and run after the stages, in that order) and
`gates`. `--set a.b=c` overrides any key before validation (`stages.0.ratio=0.5` indexes lists).

A gate is a bare target (`max_size_mb: 25`) or names the stage folder it reads (`max_size_mb: {value: 25, stage:
02-quantize}`); the defaults are in edgelm.pipeline.gates.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from edgelm.data.readers import MAX_SEED, DataConfig
from edgelm.core.errors import EdgelmError
from edgelm.core.registry import Name
from edgelm.core.stage import StageConfig, get_stage
from edgelm.pipeline.run import stage_names
from edgelm.pipeline.search_space import SearchConfig
from edgelm.runtimes.base import RUNTIMES

SECTION_KINDS = ("export", "eval", "bench")  # recipe sections that are stages run after `stages:`
MAX_RECIPE_BYTES = 1 << 20
WHAT_TO_ADD = "add a model: and a stages: list, e.g. `stages: [{kind: export}]` (edgelm stages lists the kinds)"


STAGE_FOLDER = r"^\d\d-[a-z][a-z0-9-]*$"


class Gate(BaseModel):
    """A target and the stage folder its figure is read from (a bare number sets only the target)."""

    model_config = ConfigDict(extra="forbid")
    value: float
    stage: str | None = Field(None, pattern=STAGE_FOLDER, description="stage folder (NN-kind) to read the figure from")


class MaxSizeGate(Gate):
    value: float = Field(gt=0, description="largest allowed size_mb (MB = 10^6 bytes) of the shipped artifact")
    stage: str | None = Field(None, pattern=STAGE_FOLDER, description="stage folder to read size_mb from "
                              "(default: the last export or quantize stage, the artifact the run ships)")


class MaxAccuracyDropGate(Gate):
    value: float = Field(ge=0, description="largest allowed accuracy_drop_pt, in percentage points")
    stage: str | None = Field(None, pattern=STAGE_FOLDER, description="stage folder to read accuracy_drop_pt from "
                              "(default: the last eval stage)")


class MinSpeedupGate(Gate):
    value: float = Field(gt=0, description="required speedup factor (baseline time / artifact time)")
    baseline: str | None = Field(None, description="the baseline the bench must have compared against ('source', a "
                                 "stage folder); default: whatever the bench stage's baseline is")
    runtime: Name(RUNTIMES) = Field("ort-cpu", description="runtime the speedup is measured on")
    stage: str | None = Field(None, pattern=STAGE_FOLDER, description="stage folder to read speedup from "
                              "(default: the last bench stage)")


class Gates(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_accuracy_drop: MaxAccuracyDropGate | None = Field(None, description="largest allowed accuracy drop, in points")
    min_speedup: MinSpeedupGate | None = Field(None, description="speed gate against the bench baseline")
    max_size_mb: MaxSizeGate | None = Field(None, description="largest allowed size of the shipped artifact in MB")

    @field_validator("max_accuracy_drop", "min_speedup", "max_size_mb", mode="before")
    @classmethod
    def _bare_number(cls, value):
        return {"value": value} if isinstance(value, (int, float)) and not isinstance(value, bool) else value

    def named_stages(self) -> dict[str, str]:
        """{gate: stage folder} for the gates that name one."""
        gates = {"max_accuracy_drop": self.max_accuracy_drop, "min_speedup": self.min_speedup, "max_size_mb": self.max_size_mb}
        return {name: g.stage for name, g in gates.items() if g is not None and g.stage is not None}


class Recipe(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(None, pattern=r"^[\w][\w.+-]*$", max_length=100,
                             description="a label for the run (letters, digits, . _ + -); the default run folder is runs/NAME")
    model: str = Field("minilm-l6", description="MODEL: built-in name, HF folder, .gguf file or hub id")
    task: Literal["sequence-classification", "feature-extraction", "causal-lm"] | None = Field(None, description="override the detected task")
    data: DataConfig | None = Field(None, description="training / calibration data")
    eval_data: DataConfig | None = Field(None, description="held-out evaluation data")
    seed: int = Field(0, ge=0, lt=MAX_SEED, description="seed for every random choice")
    allow_pickle: bool = Field(False, description="allow pickle checkpoints (can execute code)")
    trust_remote_code: bool = Field(False, description="run model code shipped with the checkpoint")
    stages: list[dict] = Field(default_factory=list, description="ordered stages, each {kind: ..., ...params}")
    export: dict | None = Field(None, description="export section (stage kind 'export')")
    eval: dict | None = Field(None, description="evaluation section (stage kind 'eval')")
    bench: dict | None = Field(None, description="benchmark section (stage kind 'bench')")
    gates: Gates | None = Field(None, description="pass/fail targets; a miss exits with code 3")
    search: SearchConfig | None = Field(None, description="what `edgelm search` varies and measures (edgelm run "
                                                          "runs the recipe as written)")

    @field_validator("data", "eval_data", mode="before")
    @classmethod
    def _path_shorthand(cls, value):
        return {"path": value} if isinstance(value, str) else value

    def steps(self) -> list[tuple[str, StageConfig]]:
        """The validated (kind, config) list the pipeline runs."""
        steps = [_validate_stage(spec, f"stages[{i}]") for i, spec in enumerate(self.stages)]
        for kind in SECTION_KINDS:
            section = getattr(self, kind)
            if section is not None:
                steps.append((kind, _validate_config(kind, section, kind)))
        return steps


def _validate_stage(spec: Any, where: str) -> tuple[str, StageConfig]:
    if not isinstance(spec, dict):
        raise EdgelmError(f"{where}: must be a mapping with a 'kind' key, got {type(spec).__name__}")
    if "kind" not in spec:
        raise EdgelmError(f"{where}: missing 'kind'")
    params = {k: v for k, v in spec.items() if k != "kind"}
    kind = spec["kind"]
    if not isinstance(kind, str):
        raise EdgelmError(f"{where}.kind: must be a string, got {kind!r}")
    return kind, _validate_config(kind, params, where)


def _validate_config(kind: str, params: Any, where: str) -> StageConfig:
    stage = get_stage(kind)
    if not isinstance(params, dict):
        raise EdgelmError(f"{where}: must be a mapping of parameters, got {type(params).__name__}")
    try:
        return stage.Config.model_validate(params)
    except ValidationError as exc:
        raise EdgelmError(f"{where}.{describe_validation_error(exc)}") from None


def describe_validation_error(exc: ValidationError) -> str:
    """One line for the first problem: `field.path: what is wrong (got value)`."""
    err = exc.errors()[0]
    loc = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in err["loc"]).replace(".[", "[")
    if err["type"] == "extra_forbidden":
        return f"{loc}: unknown key; check the spelling (edgelm stages lists every parameter)"
    if err["type"] == "missing":
        return f"{loc}: required key is missing"
    got = err.get("input")
    got_text = repr(got) if not isinstance(got, (dict, list)) else type(got).__name__
    message = err["msg"].removeprefix("Value error, ")  # pydantic's prefix for a validator's own message
    return f"{loc}: {message} (got {got_text[:80]})"


# --- loading -----------------------------------------------------------------------------------------------
def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    raw = read_recipe_yaml(path)
    raw = apply_overrides(raw, overrides)
    return parse_recipe(raw, str(path))


def read_recipe_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise EdgelmError(f"{path}: no such recipe file")
    if path.stat().st_size > MAX_RECIPE_BYTES:
        raise EdgelmError(f"{path}: recipe is larger than 1 MiB; is this the right file?")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise EdgelmError(f"{path}: not UTF-8 text") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise EdgelmError(f"{path}:{where}: malformed YAML ({problem})") from None
    if raw is None:
        raise EdgelmError(f"{path}: recipe is empty; {WHAT_TO_ADD}")
    if not isinstance(raw, dict):
        raise EdgelmError(f"{path}: a recipe must be a YAML mapping (model:, stages:, ...), got {type(raw).__name__}")
    return raw


def parse_recipe(raw: dict, where: str = "recipe") -> Recipe:
    try:
        recipe = Recipe.model_validate(raw)
    except ValidationError as exc:
        raise EdgelmError(f"{where}: {describe_validation_error(exc)}") from None
    try:
        steps = recipe.steps()  # validates every stage config now, not halfway through a run
    except EdgelmError as exc:
        raise EdgelmError(f"{where}: {exc}") from None
    if not steps:  # `task:` or `gates:` alone would "run" nothing and report success
        raise EdgelmError(f"{where}: the recipe has nothing to run (no stages and no export/eval/bench section); "
                          f"{WHAT_TO_ADD}")
    check_gate_stages(recipe.gates, stage_names(steps), where)
    return recipe


def check_gate_stages(gates: Gates | None, names: list[str], where: str) -> None:
    for gate, stage in (gates.named_stages() if gates else {}).items():  # a typo fails now, not after the run
        if stage not in names:
            raise EdgelmError(f"{where}: gates.{gate}.stage: {stage} is not a stage of this recipe "
                              f"(stages: {', '.join(names) or 'none'})")


def apply_overrides(raw: dict, overrides) -> dict:
    """`a.b=c` sets raw['a']['b'] = yaml(c); integer parts index lists (`stages.0.ratio=0.5`)."""
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise EdgelmError(f"--set {item!r}: expected key=value, e.g. --set stages.0.ratio=0.5")
        try:
            parsed = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError:
            parsed = value
        _set_path(raw, key.strip().split("."), parsed, item)
    return raw


def _set_path(node, parts: list[str], value, item: str) -> None:
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise EdgelmError(f"--set {item!r}: {'.'.join(parts[:i + 1])} is not an index of a {len(node)}-item list")
            part = int(part)
        elif not isinstance(node, dict):
            raise EdgelmError(f"--set {item!r}: {'.'.join(parts[:i])} is not a mapping")
        if last:
            node[part] = value
        else:
            if isinstance(node, dict) and (part not in node or node[part] is None):
                node[part] = {}
            node = node[part]


def dump_recipe(recipe: Recipe) -> str:
    """The resolved recipe (defaults filled in) as YAML, written next to the results."""
    data = recipe.model_dump(mode="json", exclude_none=True)
    data["stages"] = [{"kind": k, **c.model_dump(mode="json")} for k, c in recipe.steps()[: len(recipe.stages)]]
    for kind, config in recipe.steps()[len(recipe.stages):]:
        data[kind] = config.model_dump(mode="json")
    return yaml.safe_dump(data, sort_keys=False)
