"""ONNX quantization through onnxruntime.quantization: int8 dynamic, int8 static (QDQ), int4 weight-only
(MatMulNBits + GatherBlockQuantized), fp16. One function per method; `quantize_onnx` dispatches on the method.

Fused graphs (Attention, SkipLayerNormalization, ... from the export optimiser) are contrib ops that ONNX shape
inference cannot type; the quantizer then cannot tell a tensor's type and fails unless it is given a default
tensor type, so every int8 path passes `DefaultTensorType=FLOAT`.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import onnx

from edgelm.core.errors import EdgelmError
from edgelm.export.lstm import fold_lstm_weights
from edgelm.export.onnx_io import TWO_GB, is_large, save_model, strip_node_metadata

METHODS = ("int8-dynamic", "int8-static", "int4", "fp16")
WEIGHT_OPS = ("MatMul", "Gemm")


@dataclass
class QuantOptions:
    method: str = "int8-dynamic"
    per_channel: bool = True
    reduce_range: bool = False  # int8: 7-bit weights, for x86 CPUs without VNNI (measure.machine.int8_matmul_saturates)
    calibration: str = "minmax"  # int8-static: minmax | entropy | percentile
    block_size: int = 32  # int4
    table_block_size: int | None = None  # int4 affine, calibrated: the tied table / LM head's block size (None: block_size)
    finer_blocks_mb: float = 0.0  # int4 calibrated algorithms: MB the most error-prone MatMuls may add at block / 2
    symmetric: bool = True  # int4
    accuracy_level: int | None = 4  # int4: 4 = int8 activations in MatMulNBits (fast on CPU)
    algorithm: str = "rtn"  # int4: a name in int4.INT4_ALGORITHMS
    quantize_embedding: bool = True  # int8 Gather / int4 GatherBlockQuantized for the token embedding
    table_bits: int = 8  # int8-dynamic: 4 = the token table as 4-bit GatherBlockQuantized (table4.py)
    quantize_attention_weights: bool = True  # fused Attention QKV and Gemm weights stored int8 (float math)
    exclude: list[str] = field(default_factory=list)  # node names kept float

    def params(self) -> dict:
        keys = {"int8-dynamic": ("per_channel", "reduce_range", "quantize_embedding", "quantize_attention_weights")
                                + (("table_bits", "block_size", "table_block_size") if self.table_bits == 4 else ()),
                "int8-static": ("per_channel", "reduce_range", "calibration", "quantize_embedding", "quantize_attention_weights"),
                "int4": ("block_size", "table_block_size", "finer_blocks_mb", "symmetric", "accuracy_level", "algorithm",
                         "quantize_embedding", "quantize_attention_weights"),
                "fp16": ()}[self.method]
        return {k: v for k, v in asdict(self).items() if k in keys}


def quantize_onnx(src: Path, dst: Path, options: QuantOptions, calibration_reader=None) -> dict:
    """Write the quantized `dst` (+ dst.data when large) from float `src`; returns what was done."""
    if options.method not in METHODS:
        raise EdgelmError(f"quantize method {options.method!r}: unknown; use one of {', '.join(METHODS)}")
    unknown = sorted(set(options.exclude) - {n.name for n in onnx.load(str(src), load_external_data=False).graph.node})
    if unknown:
        raise EdgelmError(f"quantize exclude: nodes {unknown[:5]} are not in {src.name}; list names from the sensitivity table")
    dst.parent.mkdir(parents=True, exist_ok=True)
    handler = {"int8-dynamic": _int8_dynamic, "int8-static": _int8_static, "int4": _int4, "fp16": _fp16}[options.method]
    with _quiet_root_logger():
        handler(Path(src), Path(dst), options, calibration_reader)
    strip_node_metadata(Path(dst))
    return {"method": options.method, "params": options.params(), "excluded_nodes": list(options.exclude),
            "op_counts": quantized_op_counts(dst)}


def _int8_dynamic(src: Path, dst: Path, options: QuantOptions, _reader) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # Gemm stays float here: onnxruntime's per-channel dynamic Gemm breaks shape inference (transB heads are tiny).
    # Fused Attention is split first (split_attention_projection): QAttention mishandles padded batches (measured
    # on MiniLM: cosine 0.75 vs float for the short row of a padded pair, 0.99 at batch 1).
    ops = ["MatMul", "LSTM"] + (["Gather"] if options.quantize_embedding else [])  # LSTM: DynamicQuantizeLSTM
    table4 = options.quantize_embedding and options.table_bits == 4
    if table4:  # the token table is left for the 4-bit pass (table4.py); position / type tables go int8
        from edgelm.techniques.quantize.table4 import int4_embedding_tables, token_tables

    later = token_tables(onnx.load(str(src), load_external_data=False), options.exclude) if table4 else []
    with _preprocessed(src, split_attention_projection, fold_lstm_weights) as model_path:
        quantize_dynamic(model_path, dst, per_channel=options.per_channel, reduce_range=options.reduce_range,
                         weight_type=QuantType.QInt8,
                         op_types_to_quantize=ops, nodes_to_exclude=_split_names(options.exclude) + later,
                         use_external_data_format=is_large(src),
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT, "MatMulConstBOnly": True})
    if table4:
        int4_embedding_tables(dst, options)
    if options.quantize_attention_weights:
        model = onnx.load(str(dst))
        if _int8_float_weights(model, options.exclude):
            save_model(model, dst)


def _split_names(exclude: list[str]) -> list[str]:
    """An excluded fused Attention keeps its QKV projection float: exclude the MatMul the split gives it too."""
    return [*exclude, *(f"{name}_qkv" for name in exclude)]


def split_attention_projection(model: onnx.ModelProto) -> int:
    """Fused encoder Attention (weights inside) -> MatMul(x, Wqkv) + Split + MultiHeadAttention (no weights), so
    the QKV projection is an ordinary MatMul the int8 quantizers take, while the attention itself stays one fused
    op. The alternative, onnxruntime's QAttention, has no attention-bias input: it would drop the padding mask.
    Left alone: Attention with a mask_index, past state, causal mode or unequal q/k/v widths."""
    from onnx import helper, numpy_helper

    done = 0
    for node in list(model.graph.node):
        ins = list(node.input) + [""] * (6 - len(node.input))
        if node.op_type != "Attention" or node.domain != "com.microsoft" or ins[3] or ins[4] or len(node.input) > 6:
            continue
        inits = {t.name: t for t in model.graph.initializer}
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if attrs.get("unidirectional") or len(node.output) > 1 and any(node.output[1:]):
            continue
        if ins[1] not in inits:
            _fold_constant_concat(model, ins[1], inits)
        weight = inits.get(ins[1])
        if weight is None or len(weight.dims) != 2 or weight.dims[1] % 3:
            continue
        hidden = weight.dims[1] // 3
        if list(attrs.get("qkv_hidden_sizes", [hidden] * 3)) != [hidden] * 3:
            continue
        name = node.name
        model.graph.initializer.append(numpy_helper.from_array(np.array([hidden] * 3, dtype=np.int64), f"{name}_split"))
        extra = {k: attrs[k] for k in ("scale", "mask_filter_value") if k in attrs}
        new = [helper.make_node("MatMul", [ins[0], ins[1]], [f"{name}_qkv"], name=f"{name}_qkv"),
               helper.make_node("Split", [f"{name}_qkv", f"{name}_split"], [f"{name}_q", f"{name}_k", f"{name}_v"],
                                name=f"{name}_split", axis=-1),
               helper.make_node("MultiHeadAttention", [f"{name}_q", f"{name}_k", f"{name}_v", ins[2], "", ins[5]],
                                [node.output[0]], name=f"{name}_mha", domain="com.microsoft",
                                num_heads=attrs["num_heads"], **extra)]
        at = list(model.graph.node).index(node)
        model.graph.node.remove(node)
        for i, n in enumerate(new):
            model.graph.node.insert(at + i, n)
        done += 1
    return done


def _int8_float_weights(model: onnx.ModelProto, exclude: list[str]) -> int:
    """Weights no quantizer pass takes (the fused Attention's QKV weight: QAttention is wrong on padded batches;
    Gemm weights, e.g. an encoder's pooler) keep float math but are stored int8 per output column behind a
    DequantizeLinear: the file shrinks, the computation stays float."""
    from onnx import helper, numpy_helper

    from edgelm.techniques.quantize.packing import int8_columns

    done = 0
    for node in list(model.graph.node):
        if node.op_type not in ("Attention", "Gemm") or len(node.input) < 2 or node.name in exclude:
            continue
        weight, inits = node.input[1], {t.name: t for t in model.graph.initializer}
        if weight not in inits:
            _fold_constant_concat(model, weight, inits)
        if weight not in inits or inits[weight].data_type != onnx.TensorProto.FLOAT:
            continue
        transposed = node.op_type == "Gemm" and any(a.name == "transB" and a.i for a in node.attribute)
        axis = 0 if transposed else 1  # the output-column axis
        q, scale = int8_columns(numpy_helper.to_array(inits[weight]), axis)
        model.graph.initializer.remove(inits[weight])
        model.graph.initializer.extend([numpy_helper.from_array(q, weight + "_int8"), numpy_helper.from_array(scale, weight + "_scale")])
        model.graph.node.insert(list(model.graph.node).index(node), helper.make_node(
            "DequantizeLinear", [weight + "_int8", weight + "_scale"], [weight], name=weight + "_dequantize", axis=axis))
        done += 1
    return done


def _fold_constant_concat(model: onnx.ModelProto, name: str, inits: dict) -> None:
    """The fusion builds the QKV weight at run time as Concat(Wq, Wk, Wv); make it one initializer (in `inits`
    too) so it can be stored int8. Left alone when any part is not a float initializer or is used elsewhere."""
    from onnx import numpy_helper

    producer = next((n for n in model.graph.node if name in n.output), None)
    if producer is None or producer.op_type != "Concat" or not all(i in inits for i in producer.input):
        return
    parts = [inits[i] for i in producer.input]
    users = [n for n in model.graph.node for i in n.input if i in producer.input]
    if len(users) != len(parts) or any(p.data_type != onnx.TensorProto.FLOAT for p in parts):
        return
    axis = next(a.i for a in producer.attribute if a.name == "axis")
    folded = numpy_helper.from_array(np.concatenate([numpy_helper.to_array(p) for p in parts], axis=axis), name)
    model.graph.node.remove(producer)
    for part in parts:
        model.graph.initializer.remove(part)
    model.graph.initializer.append(folded)
    inits[name] = folded


def _int8_static(src: Path, dst: Path, options: QuantOptions, reader) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if reader is None:
        raise EdgelmError("int8-static needs calibration data; pass --data or leave it empty for built-in text")
    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[options.calibration]
    with _preprocessed(src, split_attention_projection) as model_path:
        # Gather too: the embedding table is half of an encoder like MiniLM; left float it keeps the file > 2.5x int8
        ops = list(WEIGHT_OPS) + (["Gather"] if options.quantize_embedding else [])
        quantize_static(model_path, dst, reader, quant_format=QuantFormat.QDQ, op_types_to_quantize=ops,
                        per_channel=options.per_channel, reduce_range=options.reduce_range, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        nodes_to_exclude=_split_names(options.exclude), calibrate_method=method, use_external_data_format=is_large(src),
                        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT, "MatMulConstBOnly": True,
                                       "ActivationSymmetric": False, "WeightSymmetric": True})
    if options.quantize_attention_weights:  # fused Attention is not a QDQ target: store its QKV weight int8
        model = onnx.load(str(dst))
        if _int8_float_weights(model, options.exclude):
            save_model(model, dst)


def needs_calibration(options: QuantOptions) -> bool:
    """Whether quantizing with these options reads calibration data (int8-static; an int4 algorithm that says so)."""
    from edgelm.techniques.quantize.int4 import INT4_ALGORITHMS

    return options.method == "int8-static" or options.method == "int4" and INT4_ALGORITHMS.get(options.algorithm).needs_calibration


def _int4(src: Path, dst: Path, options: QuantOptions, reader) -> None:
    """The registered algorithm quantizes the MatMuls; then the embedding table (see `_embedding_table`)."""
    from edgelm.techniques.quantize.int4 import INT4_ALGORITHMS, Int4Job
    from edgelm.techniques.quantize.packing import gather_tables_as_uint8
    from edgelm.techniques.quantize.tied import unfuse_transposed_lm_head

    algorithm = INT4_ALGORITHMS.get(options.algorithm)
    algorithm.check(options, reader)
    model = onnx.load(str(src))
    unfuse_transposed_lm_head(model, options.exclude)  # the fused graph's LM head is quantized like any MatMul
    split_attention_projection(model)  # a fused encoder's QKV projection becomes a MatMul, so MatMulNBits too
    options = replace(options, exclude=_split_names(options.exclude))
    tied = _tied_pair(model, options)
    lone_table = options.quantize_embedding and tied is None
    model = algorithm.quantize(Int4Job(model, options, tied, lone_table, reader))
    model, shared = _embedding_table(model, algorithm, tied, lone_table, options)
    gather_tables_as_uint8(model)  # the .ort format has no int4 tensors
    if options.quantize_attention_weights:  # fused Attention / Gemm take no MatMulNBits: their weights go int8
        _int8_float_weights(model, options.exclude)
    model.metadata_props.append(onnx.StringStringEntryProto(key="edgelm.tied_embedding", value=str(shared)))
    save_model(model, dst)


def _embedding_table(model: onnx.ModelProto, algorithm, tied, lone_table: bool, options: QuantOptions):
    """A tied table reads the LM head's 4 bits when the algorithm can share them; otherwise (e.g. HQQ's float zero
    points) it is quantized on its own by RTN, as is a lone table the algorithm left alone. -> (model, shared)."""
    from edgelm.techniques.quantize.int4._nbits import rtn_pass

    if tied is not None and algorithm.tie(model, tied, options):
        return model, True
    if tied is not None or lone_table and not algorithm.quantizes_lone_table:
        model = rtn_pass(model, options, ("Gather",))
    return model, False


def _tied_pair(model: onnx.ModelProto, options: QuantOptions):
    """The embedding table / LM head pair to share one 4-bit table, when the table is quantized and neither is
    kept float."""
    from edgelm.techniques.quantize.tied import find_tied_pair

    tied = find_tied_pair(model) if options.quantize_embedding else None
    if tied and {tied.gather, tied.lm_head} & set(options.exclude):
        return None
    return tied


def _fp16(src: Path, dst: Path, options: QuantOptions, _reader) -> None:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(src))
    # keep_io_types: callers keep feeding/reading float32; fused contrib ops are typed by the converter itself
    converted = convert_float_to_float16(model, keep_io_types=True, node_block_list=options.exclude or None,
                                         disable_shape_infer=is_large(src))
    save_model(converted, dst)


# --- helpers ---------------------------------------------------------------------------------------------------
class _preprocessed:
    """A copy of `src` in a temp folder (the quantizers write sidecar files next to it) with fresh value_info:
    the exporter's annotations can be stale (dynamo Gemm heads) and ONNX shape inference cannot type contrib ops
    (fused graphs), which leaves static QDQ unable to quantize activations. onnxruntime's symbolic shape
    inference knows the contrib ops; where it fails, DefaultTensorType covers the untyped tensors."""

    def __init__(self, src: Path, *rewrites):
        self.src, self.rewrites = src, rewrites

    def __enter__(self) -> str:
        self.tmp = Path(tempfile.mkdtemp(prefix="edgelm-quant-"))
        model = onnx.load(str(self.src))
        model.graph.ClearField("value_info")
        for rewrite in self.rewrites:
            rewrite(model)
        save_model(_typed(model), self.tmp / "model.onnx")
        return str(self.tmp / "model.onnx")

    def __exit__(self, *exc):
        shutil.rmtree(self.tmp, ignore_errors=True)


@contextlib.contextmanager
def _quiet_root_logger():
    """onnxruntime.quantization advises `quant_pre_process` on the root logger at every call; we run our own
    shape handling (see _preprocessed), so the advice is noise on the user's terminal."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _typed(model: onnx.ModelProto) -> onnx.ModelProto:
    if model.ByteSize() > TWO_GB:
        return model
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    try:
        return SymbolicShapeInference.infer_shapes(model, auto_merge=True, guess_output_rank=True)
    except Exception:  # an op it does not know: quantize untyped (DefaultTensorType)
        return model


def quantized_op_counts(path: Path) -> dict[str, int]:
    """How many quantized / float weight ops the graph holds (what the manifest and report show)."""
    counts: dict[str, int] = {}
    interesting = {"MatMulNBits", "GatherBlockQuantized", "MatMulInteger", "DynamicQuantizeLinear", "QLinearMatMul",
                   "DequantizeLinear", "QuantizeLinear", "MatMul", "Gemm", "Gather", "Cast", "LSTM", "DynamicQuantizeLSTM"}
    for node in onnx.load(str(path), load_external_data=False).graph.node:
        if node.op_type in interesting:
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items()))
