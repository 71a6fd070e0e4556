"""The calibrated int4 algorithms' one pass (edgelm.techniques.quantize.calibrated): moments of every MatMul input
on the calibration feeds, optional AWQ-style scaling folded into the graph, then one asymmetric MatMulNBits per
MatMul. A tied LM head is never rescaled (the embedding lookup reads its bits) and takes `table_block_size`
when given (the tied table is the most sensitive tensor: on SmolLM2-135M, RTN of the table alone at block 64 costs
a perplexity ratio of 1.15 on held-out prose, at block 32 1.09)."""

from __future__ import annotations


def calibrated_pass(job, rounding: str, fold: bool):
    from edgelm.techniques.quantize.awq import fold_scales
    from edgelm.techniques.quantize.calibrated import input_moments, quantize_calibrated

    options = job.options
    moments = input_moments(job.model, job.reader, options.exclude)
    if fold:
        fold_scales(job.model, moments, options.block_size, options.exclude, keep=[job.tied.lm_head] if job.tied else [])
    head = job.tied.lm_head if job.tied else None
    sizes = {head: options.table_block_size} if head and options.table_block_size else {}
    quantize_calibrated(job.model, moments, options.block_size, options.accuracy_level, options.exclude, rounding,
                        options.finer_blocks_mb, sizes)
    return job.model
