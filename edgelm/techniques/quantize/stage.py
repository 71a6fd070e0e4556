"""Quantize the exported ONNX model (int8 dynamic/static, int4 weight-only, fp16) with onnxruntime.quantization,
check it against the float graph with quantization tolerances, and optionally rank layers by sensitivity and
keep the most sensitive ones float (`auto`). The work lives in workflow.py and the modules beside it (int4/: one
module per int4 algorithm); this module is the stage glue."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Literal

from pydantic import Field

from edgelm.core.errors import EdgelmError
from edgelm.core.registry import Name
from edgelm.export.gguf import GGUF_TYPES
from edgelm.core.stage import Stage, StageConfig, StageContext, StageResult, register_stage
from edgelm.techniques.quantize.int4 import INT4_ALGORITHMS, summaries


class QuantizeConfig(StageConfig):
    method: Literal["int8-dynamic", "int8-static", "int4", "fp16"] = Field("int8-dynamic", description="quantization method")
    per_channel: bool = Field(True, description="int8: per-channel weight scales")
    reduce_range: bool = Field(False, description="int8: 7-bit weights, so onnxruntime's int8 MatMul cannot saturate on x86 CPUs without VNNI (AVX2-only); costs some accuracy elsewhere")
    calibration: Literal["minmax", "entropy", "percentile"] = Field("minmax", description="int8-static: activation range calibration")
    calibration_samples: int = Field(64, gt=0, description="texts used for calibration (from --data, else built-in prose)")
    block_size: int = Field(32, description="int4: weights per quantization block (16, 32, 64, 128, ...)")
    table_block_size: int | None = Field(None, description="int4 affine and the calibrated algorithms (imatrix, awq, gptq, awq-gptq): block size of the tied embedding table / LM head (default: block_size; 16 halves its error for +3.4 MB on SmolLM2)")
    finer_blocks_mb: float = Field(0.0, ge=0, description="int4 gptq / awq-gptq / imatrix / awq: MB the MatMuls whose measured output error falls most may add by taking half-size blocks (mixed precision under a size budget)")
    symmetric: bool = Field(True, description="int4: symmetric blocks (no zero points)")
    accuracy_level: int | None = Field(4, ge=0, le=4, description="int4: MatMulNBits compute precision (4 = int8 activations, fastest on CPU; 0 = float)")
    algorithm: Name(INT4_ALGORITHMS) = Field("rtn", description=f"int4 algorithm: {summaries()}")
    quantize_embedding: bool = Field(True, description="also quantize the token embedding table (int8 Gather / int4 GatherBlockQuantized)")
    table_bits: Literal[8, 4] = Field(8, description="int8-dynamic: bits of the token embedding table (4 = GatherBlockQuantized in blocks of table_block_size or block_size, the layers stay int8 MatMulInteger)")
    exclude: list[str] = Field([], description="ONNX node names kept float (see the sensitivity table)")
    sensitivity: bool = Field(False, description="rank layers by the error they add (SQNR) and, with labels, the accuracy with each kept float")
    auto: bool = Field(False, description="keep the most sensitive layers float until the accuracy gate holds (needs labelled --data)")
    max_accuracy_drop_pt: float = Field(0.5, ge=0, description="auto: accuracy drop (points) allowed against the float model")
    parity_samples: int = Field(32, gt=0, description="texts compared between the float and quantized graphs")
    tolerance: list[str] = Field([], description="parity tolerance overrides NAME=VALUE (label_agreement, min_cosine, top1_agreement, perplexity_ratio)")
    pte: bool | None = Field(None, description="also write a torch-side quantized model.pte (XNNPACK; 8da8w, or 8da4w for int4); default: when the input has a .pte")
    gguf_type: Literal[GGUF_TYPES] | None = Field(None, description="llama.cpp type of the GGUF written when the input has one (default: the ONNX int4 grid where llama.cpp has it: affine / asymmetric block 32 -> Q4_1, symmetric block 32 -> Q4_0, other int4 -> Q4_K_M; int8 -> Q8_0)")
    on_parity_fail: Literal["error", "warn"] = Field("error", description="what a parity miss does: fail the stage or only record it")


@register_stage
class QuantizeStage(Stage):
    kind = "quantize"
    Config = QuantizeConfig
    summary = "Quantize ONNX (int8 dynamic/static, int4, fp16) and .pte (torchao 8da8w/8da4w), with parity and sensitivity"
    accepts_module = True  # a plain nn.Module's ONNX export, fed its example inputs

    def run(self, bundle, config: QuantizeConfig, ctx: StageContext) -> StageResult:
        from edgelm.techniques.quantize.module import quantize_module_bundle
        from edgelm.techniques.quantize.workflow import quantize_bundle

        quantize = quantize_module_bundle if bundle.is_module else quantize_bundle
        with float_onnx(bundle, ctx) as (source, float_bundle):
            out_bundle, metrics, files = quantize(float_bundle, source, config, ctx)
        return StageResult(out_bundle, metrics, files)


class float_onnx:
    """The float model.onnx to quantize: the bundle's export, or one exported now by the export stage."""

    def __init__(self, bundle, ctx: StageContext):
        self.bundle, self.ctx, self.tmp = bundle, ctx, None

    def __enter__(self):
        onnx_path = self.bundle.artifacts.get("onnx")
        if onnx_path is not None and Path(onnx_path).is_file():
            return Path(onnx_path), self.bundle
        if self.bundle.model is None:
            raise EdgelmError("quantize: the input has no ONNX artifact and no torch model; run export first")
        from edgelm.core.stage import get_stage

        export = get_stage("export")
        # a ".tmp" folder beside the stage folder: the pipeline sweeps it if this process is killed
        self.tmp = Path(tempfile.mkdtemp(prefix=".quantize-export-", suffix=".tmp", dir=self.ctx.workdir.parent))
        sub = StageContext(workdir=self.tmp, data=self.ctx.data, eval_data=self.ctx.eval_data, seed=self.ctx.seed,
                           allow_pickle=self.ctx.allow_pickle, trust_remote_code=self.ctx.trust_remote_code,
                           initial_bundle=self.ctx.initial_bundle)
        exported = export().run(self.bundle, export.Config(), sub).bundle
        return Path(exported.artifacts["onnx"]), exported

    def __exit__(self, *exc):
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
