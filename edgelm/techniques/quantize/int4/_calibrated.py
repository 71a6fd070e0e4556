"""The calibrated int4 algorithms' one pass (edgelm.techniques.quantize.calibrated): moments of every MatMul input
on the calibration feeds, optional AWQ-style scaling folded into the graph, then one asymmetric MatMulNBits per
MatMul. A tied LM head is never rescaled (the embedding lookup reads its bits)."""

from __future__ import annotations


def calibrated_pass(job, rounding: str, fold: bool):
    from edgelm.techniques.quantize.awq import fold_scales
    from edgelm.techniques.quantize.calibrated import input_moments, quantize_calibrated

    options = job.options
    moments = input_moments(job.model, job.reader, options.exclude)
    if fold:
        fold_scales(job.model, moments, options.block_size, options.exclude, keep=[job.tied.lm_head] if job.tied else [])
    quantize_calibrated(job.model, moments, options.block_size, options.accuracy_level, options.exclude, rounding,
                        options.finer_blocks_mb)
    return job.model
