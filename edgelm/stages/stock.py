"""The stock toolchain's int8 encoder, built inside edgelm as a bench reference: what a user gets without edgelm.
torch.onnx.export (TorchScript, as Optimum does) -> onnxruntime.transformers optimizer (model_type bert) ->
onnxruntime.quantization.quantize_dynamic (per-tensor QInt8 weights: Optimum's avx512_vnni dynamic config) ->
.ort. `STOCK_RECIPE` names the exact calls so a reader can reproduce it without edgelm."""

from __future__ import annotations

import shutil
from pathlib import Path

from edgelm.core.errors import EdgelmError
from edgelm.core.ui import step

STOCK_NAME = "stock-int8"
STOCK_RECIPE = (
    "1. torch.onnx.export(model, (input_ids, attention_mask[, token_type_ids]), 'model.onnx', dynamo=False, "
    "opset_version=17, dynamic_axes={each input: {0: 'batch', 1: 'sequence'}}); "
    "2. onnxruntime.transformers.optimizer.optimize_model('model.onnx', model_type='bert', "
    "num_heads=config.num_attention_heads, hidden_size=config.hidden_size).save_model_to_file('opt.onnx'); "
    "3. onnxruntime.quantization.quantize_dynamic('opt.onnx', 'int8.onnx', weight_type=QuantType.QInt8, "
    "per_channel=False, extra_options={'DefaultTensorType': onnx.TensorProto.FLOAT}) (default op types: MatMul, Attention, Gather, EmbedLayerNormalization, ...); "
    "4. python -m onnxruntime.tools.convert_onnx_models_to_ort int8.onnx (for ort-mobile)")


def build_stock_int8(bundle, folder: Path, formats: list[str]):
    """The stock int8 model of `bundle` (a torch encoder) in `folder`; returns the derived bundle."""
    if bundle.model is None or bundle.task == "causal-lm":
        raise EdgelmError("bench baseline stock-int8: needs a torch encoder model (the stock path starts from torch)")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with step("bench: stock int8 reference (torch export -> ORT transformers optimizer -> quantize_dynamic)"):
        plain = torchscript_export(bundle, folder / "export.onnx")
        optimized = transformers_optimize(bundle, plain, folder / "optimized.onnx")
        final = folder / "model.onnx"
        quantize_stock(optimized, final)
        for scratch in (plain, optimized):
            scratch.unlink(missing_ok=True)
        artifacts = {"onnx": final}
        if "ort" in formats:
            from edgelm.techniques.quantize.artifact import convert_ort

            artifacts["ort"] = Path(convert_ort(final, folder).path)
    bundle.tokenizer.save_pretrained(str(folder))
    return bundle.derive(artifacts=artifacts)


def torchscript_export(bundle, path: Path) -> Path:
    import torch

    from edgelm.export.onnx import encoder_example
    from edgelm.models.tasks import output_name

    module, names, args = encoder_example(bundle)
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    with torch.no_grad():
        torch.onnx.export(module, args, str(path), input_names=names, output_names=[output_name(bundle.task)],
                          dynamic_axes={**axes, output_name(bundle.task): {0: "batch"}}, opset_version=17,
                          dynamo=False)
    return path


def transformers_optimize(bundle, src: Path, dst: Path) -> Path:
    from onnxruntime.transformers.optimizer import optimize_model

    config = bundle.model.config
    model = optimize_model(str(src), model_type="bert", num_heads=config.num_attention_heads,
                           hidden_size=config.hidden_size)
    model.save_model_to_file(str(dst))
    return dst


def quantize_stock(src: Path, dst: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    import onnx

    # DefaultTensorType: what onnxruntime's own error advises when shape inference cannot type a fused op's output
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=False,
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})


def stock_target(source_bundle, formats: list[str], folder: Path):
    """(Target of the stock int8 model, its op counts) — the bench's stock-int8 baseline."""
    from edgelm.runtimes.base import target_from_bundle
    from edgelm.techniques.quantize.onnx_quant import quantized_op_counts

    if folder.exists():
        shutil.rmtree(folder)
    stock = build_stock_int8(source_bundle, folder, formats)
    return target_from_bundle(stock, STOCK_NAME, folder=folder), quantized_op_counts(stock.artifacts["onnx"])
