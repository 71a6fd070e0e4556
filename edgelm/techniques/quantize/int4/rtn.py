"""int4 'rtn': onnxruntime's round-to-nearest blocks; an untied embedding table goes through the same pass."""

from __future__ import annotations

from edgelm.techniques.quantize.int4 import int4_algorithm


@int4_algorithm("rtn", "round-to-nearest blocks, symmetric or with zero points", quantizes_lone_table=True)
def quantize(job):
    from edgelm.techniques.quantize.int4._nbits import rtn_pass

    return rtn_pass(job.model, job.options, ("MatMul", "Gather") if job.lone_table else ("MatMul",))
