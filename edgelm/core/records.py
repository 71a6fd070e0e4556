"""The JSON files edgelm writes, as typed records with one reader (`load`, `read`) and one writer (`save`) each:

- `StageMetrics`  NN-kind/metrics.json  what one stage did: its hash (resume), config, metrics, files, timing
- `RunRecord`     run.json              the whole run: input, environment, one `StageRecord` per stage, gate rows
- `Manifest`      manifest.json         what an export folder holds and how to feed it (see edgelm.export.manifest)

Unknown keys are kept (files written by a newer edgelm still load); each record carries `units`, the unit of every
metric key it reports, from the vocabulary in edgelm.core.metrics.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edgelm.core.errors import EdgelmError
from edgelm.core.metrics import units_of

RUN_SCHEMA = 1
MANIFEST_SCHEMA = 1


class Record(BaseModel):
    """A JSON file in a folder: `FILE` names it; errors say what it is (`WHAT`) and how to fix it (`FIX`)."""

    model_config = ConfigDict(extra="allow")
    FILE: ClassVar[str]
    WHAT: ClassVar[str]
    FIX: ClassVar[str]

    @classmethod
    def load(cls, folder: str | os.PathLike):
        """The record in `folder`; a missing or invalid file is one EdgelmError line."""
        path = Path(folder) / cls.FILE
        try:
            return cls.model_validate(json.loads(path.read_text()))
        except OSError as exc:
            raise EdgelmError(f"{path}: cannot read the {cls.WHAT} ({exc.strerror or exc}); {cls.FIX}") from None
        except ValidationError as exc:
            raise EdgelmError(f"{path}: invalid {cls.WHAT} ({first_problem(exc)}); {cls.FIX}") from None
        except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
            raise EdgelmError(f"{path}: invalid {cls.WHAT} ({str(exc).splitlines()[0]}); {cls.FIX}") from None

    @classmethod
    def read(cls, folder: str | os.PathLike):
        """The record in `folder`, or None when there is none (or it is not ours)."""
        try:
            return cls.load(folder)
        except EdgelmError:
            return None

    def metric_keys(self) -> list[str]:
        """The metric keys this record reports (their units go into `units`)."""
        return []

    def refresh_units(self) -> None:
        if "units" in type(self).model_fields:
            self.units = units_of(self.metric_keys())

    @model_validator(mode="after")
    def _units(self):
        self.refresh_units()
        return self

    def save(self, folder: str | os.PathLike) -> Path:
        """Write atomically: readers see the old file or the new one, never half of it."""
        self.refresh_units()
        path = Path(folder) / self.FILE
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(self.model_dump(), indent=2, default=str))  # default: numpy scalars, paths
        os.replace(tmp, path)
        return path


def first_problem(exc: ValidationError) -> str:
    err = exc.errors()[0]
    return f"{'.'.join(str(p) for p in err['loc']) or 'top level'}: {err['msg']}"


# --- metrics.json -----------------------------------------------------------------------------------------
class StageMetrics(Record):
    FILE: ClassVar[str] = "metrics.json"
    WHAT: ClassVar[str] = "stage record"
    FIX: ClassVar[str] = "re-run the stage"

    kind: str
    hash: str
    config: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)
    units: dict[str, str] = Field(default_factory=dict)
    files: list[str] = Field(default_factory=list)
    seconds: float = 0.0
    peak_rss_mb: float | None = None  # the stage's own peak resident memory (MB), measured like `seconds`, not a result
    finished_at: str | None = None

    def metric_keys(self) -> list[str]:
        return list(self.metrics)


# --- run.json ---------------------------------------------------------------------------------------------
class StageRecord(BaseModel):
    """One stage of a run as run.json lists it."""

    model_config = ConfigDict(extra="allow")
    name: str  # the stage folder, NN-kind
    kind: str
    hash: str
    status: str  # "ran" | "resumed"
    seconds: float
    peak_rss_mb: float | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)


class GateRow(BaseModel):
    """One gate's verdict: which metric of which stage it read, against which target."""

    model_config = ConfigDict(extra="allow")
    gate: str
    metric: str | None = None  # the vocabulary key read (None only in run.json files older than these fields)
    source: str | None = None  # the stage folder the figure was read from; None when the run has no such stage
    target: str
    measured: float | None
    unit: str = ""
    ok: bool
    note: str | None = None  # why nothing was measured


class RunRecord(Record):
    FILE: ClassVar[str] = "run.json"
    WHAT: ClassVar[str] = "run record"
    FIX: ClassVar[str] = "re-run the recipe to rewrite it"

    schema_version: int = RUN_SCHEMA
    seed: int = 0
    input: dict[str, Any] = Field(default_factory=dict)
    environment: dict[str, Any] = Field(default_factory=dict)
    stages: list[StageRecord]
    total_seconds: float = 0.0
    recipe: str | None = None
    gates: list[GateRow] = Field(default_factory=list)
    units: dict[str, str] = Field(default_factory=dict)

    def metric_keys(self) -> list[str]:
        return [k for s in self.stages for k in s.metrics] + [g.metric for g in self.gates if g.metric] + ["seconds", "total_seconds"]

    def stage(self, name: str) -> StageRecord | None:
        return next((s for s in self.stages if s.name == name), None)


# --- manifest.json ----------------------------------------------------------------------------------------
class TensorSpec(BaseModel):
    name: str
    dtype: str  # numpy-style name: float32, int64, float16, ...
    shape: list[int | str]  # symbolic dims by name ("batch", "sequence", "past_sequence", "total_sequence")


class KVCache(BaseModel):
    num_layers: int
    num_kv_heads: int
    head_dim: int
    dtype: str = "float32"
    past_key: str = "past_key_values.{i}.key"
    past_value: str = "past_key_values.{i}.value"
    present_key: str = "present.{i}.key"
    present_value: str = "present.{i}.value"

    def past_names(self, i: int) -> tuple[str, str]:
        return self.past_key.format(i=i), self.past_value.format(i=i)

    def present_names(self, i: int) -> tuple[str, str]:
        return self.present_key.format(i=i), self.present_value.format(i=i)


class FileEntry(BaseModel):
    sha256: str
    bytes: int


class Manifest(Record):
    FILE: ClassVar[str] = "manifest.json"
    WHAT: ClassVar[str] = "export manifest"
    FIX: ClassVar[str] = "re-run edgelm export"

    schema_version: int = MANIFEST_SCHEMA
    task: str
    source: str
    files: dict[str, FileEntry] = Field(default_factory=dict)
    inputs: list[TensorSpec] = Field(default_factory=list)
    outputs: list[TensorSpec] = Field(default_factory=list)
    kv_cache: KVCache | None = None
    preprocessing: dict[str, Any] = Field(default_factory=dict)
    postprocessing: dict[str, Any] = Field(default_factory=dict)
    parity: dict[str, dict[str, Any]] = Field(default_factory=dict)  # format -> figures
    optimization: dict[str, Any] | None = None  # {"fusions": {name: count}, ...}
    quantization: dict[str, Any] | None = None  # filled by the quantize stage
    executorch: dict[str, Any] | None = None  # delegated / non-delegated ops of model.pte
    ort_mobile: dict[str, Any] | None = None  # required-operators config of model.ort
    gguf: dict[str, Any] | None = None  # type / llama.cpp architecture / importance matrix of model.gguf
    metrics: dict[str, Any] = Field(default_factory=dict)
    units: dict[str, str] = Field(default_factory=dict)

    def metric_keys(self) -> list[str]:
        return list(self.metrics)

    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]
