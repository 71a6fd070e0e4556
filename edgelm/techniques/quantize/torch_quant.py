"""Torch-side quantization for ExecuTorch (.pte, XNNPACK) through torchao: dynamic int8 activations with int8
per-channel weights (`8da8w`, encoders and int8 methods) or int4 grouped weights (`8da4w`, decoders with int4).
The quantized copy of the model goes through the export package's own .pte lowering (edgelm.export.executorch),
so delegation and the static KV cache are the same as for the float .pte."""

from __future__ import annotations

import copy
from pathlib import Path

from edgelm.core.errors import EdgelmError

XNNPACK_GROUP_MULTIPLE = 32  # XNNPACK's 4-bit grouped kernels take groups of 32, 64, ...


def scheme_for(task: str, method: str) -> str | None:
    if method == "fp16":
        return None
    return "8da4w" if method == "int4" else "8da8w"


def quantize_linear_layers(model, scheme: str, group_size: int = 32):
    """A quantized deep copy of `model` (the input is never touched); Linear layers only."""
    import torch
    from torchao.quantization import Int8DynamicActivationIntxWeightConfig, quantize_
    from torchao.quantization.granularity import PerAxis, PerGroup
    from torchao.utils import unwrap_tensor_subclass

    if scheme == "8da4w" and group_size % XNNPACK_GROUP_MULTIPLE:
        raise EdgelmError(f"quantize block_size {group_size}: the XNNPACK int4 kernels need a multiple of {XNNPACK_GROUP_MULTIPLE}")
    weight_dtype, granularity = (torch.int4, PerGroup(group_size)) if scheme == "8da4w" else (torch.int8, PerAxis(0))
    quantized = copy.deepcopy(model).eval()
    quantize_(quantized, Int8DynamicActivationIntxWeightConfig(weight_dtype=weight_dtype, weight_granularity=granularity),
              filter_fn=lambda module, _name: isinstance(module, torch.nn.Linear) and _fits(module, scheme, group_size))
    unwrap_tensor_subclass(quantized)  # torch.export needs plain tensors; the quantize/dequantize ops stay in the graph
    return quantized


def _fits(linear, scheme: str, group_size: int) -> bool:
    return scheme != "8da4w" or linear.in_features % group_size == 0


def export_quantized_pte(bundle, out_dir: Path, method: str, group_size: int):
    """Write out_dir/model.pte from a torchao-quantized copy of the bundle's model; returns (PteExport, scheme)."""
    from edgelm.export.executorch import export_pte

    scheme = scheme_for(bundle.task, method)
    if scheme is None:
        raise EdgelmError(f"quantize {method}: no torch-side scheme for ExecuTorch; use int8-dynamic or int4 for .pte")
    quantized = quantize_linear_layers(bundle.model, scheme, group_size)
    return export_pte(bundle.derive(model=quantized), Path(out_dir)), scheme
