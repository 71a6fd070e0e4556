"""int4 'gptq': onnxruntime's GPTQ on the MatMul weights, which reads calibration data (a lone embedding table
goes through RTN)."""

from __future__ import annotations

from edgelm.techniques.quantize.int4 import int4_algorithm


@int4_algorithm("gptq", "GPTQ: error-compensating rounding on calibration data", needs_calibration=True)
def quantize(job):
    from onnxruntime.quantization import matmul_nbits_quantizer as nbits

    from edgelm.techniques.quantize.int4._nbits import nbits_pass

    config = nbits.GPTQWeightOnlyQuantConfig(calibration_data_reader=job.reader, block_size=job.options.block_size,
                                             op_types_to_quantize=("MatMul",))
    return nbits_pass(job.model, job.options, ("MatMul",), config)
