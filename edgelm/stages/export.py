"""Export to ONNX (+ .ort, .pte) with graph optimisation and parity checks. Placeholder until issue 3 lands: registered so recipes validate, refuses to run."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from edgelm.stages.base import Stage, StageConfig, not_implemented, register_stage


class ExportConfig(StageConfig):
    formats: list[Literal["onnx", "ort", "pte"]] = Field(["onnx"], description="artifact formats to write", json_schema_extra={"cli": "--format"})
    optimize: bool = Field(True, description="run graph fusions (attention, LayerNorm, Gelu, rotary)")


@register_stage
class ExportStage(Stage):
    kind = "export"
    Config = ExportConfig
    summary = "Export to ONNX (+ .ort, .pte) with graph optimisation and parity checks"
    implemented = False
    run = not_implemented("export", "issue 3")
