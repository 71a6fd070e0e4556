"""int4 'kquant': llama.cpp-style search of each block's scale and zero point (edgelm.techniques.quantize.kquant);
MatMuls only, as hqq/gptq: a lone embedding table goes through RTN."""

from __future__ import annotations

from edgelm.techniques.quantize.int4 import int4_algorithm


@int4_algorithm("kquant", "llama.cpp-style k-quant search of each block's scale and zero point")
def quantize(job):
    from edgelm.techniques.quantize.kquant import kquant_matmuls

    kquant_matmuls(job.model, job.options.block_size, job.options.accuracy_level, job.options.exclude)
    return job.model
