"""int4 'gptq': GPTQ on calibration data, act-order with static block parameters (importance-weighted), 10%
damping, in one calibration pass (edgelm.techniques.quantize.calibrated says why not onnxruntime's GPTQ); plain
asymmetric MatMulNBits. 'awq-gptq' scales the input channels first (folded into the norms / up projections)."""

from __future__ import annotations

from edgelm.techniques.quantize.int4 import int4_algorithm


@int4_algorithm("gptq", "GPTQ: act-order error-compensating rounding on calibration data", needs_calibration=True,
                table_block_size=True)
def quantize(job):
    from edgelm.techniques.quantize.int4._calibrated import calibrated_pass

    return calibrated_pass(job, "gptq", fold=False)


@int4_algorithm("awq-gptq", "AWQ channel scaling folded into the norms, then GPTQ", needs_calibration=True,
                table_block_size=True)
def quantize_scaled(job):
    from edgelm.techniques.quantize.int4._calibrated import calibrated_pass

    return calibrated_pass(job, "gptq", fold=True)
