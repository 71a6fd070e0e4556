"""int4 'hqq': onnxruntime's half-quadratic quantization of the MatMul weights. Its zero points are float, which
GatherBlockQuantized rejects, so a tied table is not shared (`tie_to_lm_head` declines) and goes through RTN."""

from __future__ import annotations

from edgelm.techniques.quantize.int4 import int4_algorithm


@int4_algorithm("hqq", "HQQ: half-quadratic optimisation of scales and float zero points")
def quantize(job):
    from onnxruntime.quantization import matmul_nbits_quantizer as nbits

    from edgelm.techniques.quantize.int4._nbits import INT4_AXES, nbits_pass

    config = nbits.HQQWeightOnlyQuantConfig(block_size=job.options.block_size, op_types_to_quantize=("MatMul",),
                                            quant_axes=INT4_AXES)
    return nbits_pass(job.model, job.options, ("MatMul",), config)
