"""Quantize ONNX (int8 dynamic/static, int4, fp16) or torch for ExecuTorch. Placeholder until issue 5 lands: registered so recipes validate, refuses to run."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from edgelm.stages.base import Stage, StageConfig, not_implemented, register_stage


class QuantizeConfig(StageConfig):
    method: Literal["int8-dynamic", "int8-static", "int4", "fp16"] = Field("int8-dynamic", description="quantization method")


@register_stage
class QuantizeStage(Stage):
    kind = "quantize"
    Config = QuantizeConfig
    summary = "Quantize ONNX (int8 dynamic/static, int4, fp16) or torch for ExecuTorch"
    implemented = False
    run = not_implemented("quantize", "issue 5")
