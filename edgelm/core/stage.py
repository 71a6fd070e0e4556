"""The one Stage interface and its registry.

A stage takes a ModelBundle and a typed config and returns a StageResult with a *new* bundle (never mutating
the input), metrics and the files it wrote into `ctx.workdir`. The pipeline records the resolved config in the
bundle history, saves the bundle and publishes the folder atomically.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar

from pydantic import BaseModel, ConfigDict

from edgelm.core.errors import EdgelmError

if TYPE_CHECKING:
    from edgelm.models.bundle import ModelBundle

STAGE_PACKAGE = "edgelm.stages"  # its load_all() imports every stage module; named, not imported: core is the top layer


class StageConfig(BaseModel):
    """Base of every stage config: unknown keys are errors; every field carries a description (its help)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


@dataclass
class StageContext:
    workdir: Path  # temp folder this stage writes into; published by the pipeline
    data: Any | None = None  # edgelm.data.readers.DataConfig (training / calibration / eval)
    eval_data: Any | None = None
    seed: int = 0
    allow_pickle: bool = False
    trust_remote_code: bool = False
    run_dir: Path | None = None
    previous: dict[str, dict] = field(default_factory=dict)  # "NN-kind" -> metrics of finished stages
    initial_bundle: Callable[[], ModelBundle] | None = None  # the run's input model (lazy), for comparisons

    def load_options(self) -> dict:
        """This run's safety switches, for edgelm.models.loading.load_model / load_bundle."""
        return {"allow_pickle": self.allow_pickle, "trust_remote_code": self.trust_remote_code}


@dataclass
class StageResult:
    bundle: ModelBundle
    metrics: dict[str, Any] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)


class Stage:
    kind: ClassVar[str]
    Config: ClassVar[type[StageConfig]]
    summary: ClassVar[str] = ""
    accepts_module: ClassVar[bool] = False  # can run on a plain torch.nn.Module bundle (no HF config/tokenizer)

    def run(self, bundle: ModelBundle, config: StageConfig, ctx: StageContext) -> StageResult:
        raise NotImplementedError


REGISTRY: dict[str, type[Stage]] = {}


def register_stage(cls: type[Stage]) -> type[Stage]:
    kind = getattr(cls, "kind", None)
    if not isinstance(kind, str) or not kind:
        raise TypeError(f"{cls.__name__} must define a non-empty `kind`")
    if kind in REGISTRY:
        raise ValueError(f"stage kind {kind!r} is already registered by {REGISTRY[kind].__name__}")
    if not (isinstance(cls.Config, type) and issubclass(cls.Config, StageConfig)):
        raise TypeError(f"{cls.__name__}.Config must subclass StageConfig")
    missing = [n for n, f in cls.Config.model_fields.items() if not f.description]
    if missing:
        raise TypeError(f"{cls.__name__}.Config fields need a description (help text): {missing}")
    REGISTRY[kind] = cls
    return cls


def _discover() -> None:
    importlib.import_module(STAGE_PACKAGE).load_all()


def get_stage(kind: str) -> type[Stage]:
    _discover()
    if kind not in REGISTRY:
        raise EdgelmError(f"unknown stage kind {kind!r}; known kinds: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[kind]


def all_stages() -> dict[str, type[Stage]]:
    _discover()
    return dict(sorted(REGISTRY.items()))


def require_hf_model(bundle: ModelBundle, kind: str) -> None:
    """A stage that reads HF anatomy (config, tokenizer, PEFT targets) refuses a plain nn.Module in one line."""
    if bundle.is_module and not get_stage(kind).accepts_module:
        able = ", ".join(k for k, s in all_stages().items() if s.accepts_module)
        raise EdgelmError(f"{kind} needs a Hugging Face model (a transformers PreTrainedModel with its tokenizer, or "
                          f"its folder); a plain torch.nn.Module goes through {able} and bench")


def require_model(bundle: ModelBundle, kind: str) -> None:
    if bundle.model is None:
        raise EdgelmError(f"stage {kind!r} needs a torch model, but the input holds only exported artifacts")
