"""onnxruntime's MatMulNBitsQuantizer as one pass over a graph: rtn, hqq and gptq configure it, and a lone
embedding table goes through its RTN Gather path."""

from __future__ import annotations

INT4_AXES = (("MatMul", 0), ("Gather", 1))


def rtn_pass(model, options, ops: tuple[str, ...]):
    """Round-to-nearest blocks for the `ops` (MatMul weights, Gather tables) of `model`; returns the new graph."""
    from onnxruntime.quantization import matmul_nbits_quantizer as nbits

    config = nbits.DefaultWeightOnlyQuantConfig(block_size=options.block_size, is_symmetric=options.symmetric,
                                                accuracy_level=options.accuracy_level, op_types_to_quantize=ops,
                                                quant_axes=INT4_AXES)
    return nbits_pass(model, options, ops, config)


def nbits_pass(model, options, ops: tuple[str, ...], config):
    import logging

    from onnxruntime.quantization import matmul_nbits_quantizer as nbits

    logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.ERROR)  # opset-21 notice
    quantizer = nbits.MatMulNBitsQuantizer(model, bits=4, block_size=options.block_size, is_symmetric=options.symmetric,
                                           accuracy_level=options.accuracy_level, nodes_to_exclude=options.exclude,
                                           op_types_to_quantize=ops, quant_axes=INT4_AXES, algo_config=config)
    with np_errstate():
        quantizer.process()
    return quantizer.model.model


def np_errstate():
    import numpy as np

    return np.errstate(divide="ignore", invalid="ignore")  # zero-scale blocks are handled by np.where
