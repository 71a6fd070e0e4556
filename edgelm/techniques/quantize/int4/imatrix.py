"""int4 'imatrix': each block's scale and integer zero point chosen by importance-weighted least squares (the
input channels' mean square activation on calibration data, as llama.cpp's imatrix); 'awq' folds AWQ-style
channel scales into the norms / up projections first, then the same weighted blocks. Plain asymmetric MatMulNBits."""

from __future__ import annotations

from edgelm.techniques.quantize.int4 import int4_algorithm


@int4_algorithm("imatrix", "importance-weighted block scales and zero points on calibration data", needs_calibration=True,
                table_block_size=True)
def quantize(job):
    from edgelm.techniques.quantize.int4._calibrated import calibrated_pass

    return calibrated_pass(job, "weighted", fold=False)


@int4_algorithm("awq", "AWQ channel scaling folded into the norms, then importance-weighted blocks", needs_calibration=True,
                table_block_size=True)
def quantize_scaled(job):
    from edgelm.techniques.quantize.int4._calibrated import calibrated_pass

    return calibrated_pass(job, "weighted", fold=True)
