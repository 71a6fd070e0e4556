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
from edgelm.core.metrics import files_mb

METHODS = ("int8-dynamic", "int8-static", "int4", "fp16")
WEIGHT_OPS = ("MatMul", "Gemm")
TWO_GB = 2**31 - 2**26  # stay clear of protobuf's 2 GiB limit


@dataclass
class QuantOptions:
    method: str = "int8-dynamic"
    per_channel: bool = True
    calibration: str = "minmax"  # int8-static: minmax | entropy | percentile
    block_size: int = 32  # int4
    table_block_size: int | None = None  # int4 affine: the tied table / LM head's block size (None: block_size)
    symmetric: bool = True  # int4
    accuracy_level: int | None = 4  # int4: 4 = int8 activations in MatMulNBits (fast on CPU)
    algorithm: str = "rtn"  # int4: rtn | kquant | affine | hqq | gptq
    quantize_embedding: bool = True  # int8 Gather / int4 GatherBlockQuantized for the token embedding
    quantize_attention_weights: bool = True  # fused Attention QKV and Gemm weights stored int8 (float math)
    exclude: list[str] = field(default_factory=list)  # node names kept float

    def params(self) -> dict:
        keys = {"int8-dynamic": ("per_channel", "quantize_embedding", "quantize_attention_weights"),
                "int8-static": ("per_channel", "calibration", "quantize_embedding", "quantize_attention_weights"),
                "int4": ("block_size", "table_block_size", "symmetric", "accuracy_level", "algorithm",
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
    ops = ["MatMul"] + (["Gather"] if options.quantize_embedding else [])
    with _preprocessed(src, split_attention_projection) as model_path:
        quantize_dynamic(model_path, dst, per_channel=options.per_channel, weight_type=QuantType.QInt8,
                         op_types_to_quantize=ops, nodes_to_exclude=_split_names(options.exclude),
                         use_external_data_format=_is_large(src),
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT, "MatMulConstBOnly": True})
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
                        per_channel=options.per_channel, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        nodes_to_exclude=_split_names(options.exclude), calibrate_method=method, use_external_data_format=_is_large(src),
                        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT, "MatMulConstBOnly": True,
                                       "ActivationSymmetric": False, "WeightSymmetric": True})
    if options.quantize_attention_weights:  # fused Attention is not a QDQ target: store its QKV weight int8
        model = onnx.load(str(dst))
        if _int8_float_weights(model, options.exclude):
            save_model(model, dst)


def _int4(src: Path, dst: Path, options: QuantOptions, reader) -> None:
    from edgelm.techniques.quantize.packing import gather_tables_as_uint8
    from edgelm.techniques.quantize.tied import find_tied_pair, unfuse_transposed_lm_head

    model = onnx.load(str(src))
    unfuse_transposed_lm_head(model, options.exclude)  # the fused graph's LM head is quantized like any MatMul
    split_attention_projection(model)  # a fused encoder's QKV projection becomes a MatMul, so MatMulNBits too
    options = replace(options, exclude=_split_names(options.exclude))
    tied = find_tied_pair(model) if options.quantize_embedding else None
    if tied and {tied.gather, tied.lm_head} & set(options.exclude):
        tied = None
    separate_gather = options.quantize_embedding and tied is None
    if options.algorithm == "rtn":
        model = _nbits_pass(model, options, ("MatMul", "Gather") if separate_gather else ("MatMul",), None)
    elif options.algorithm == "kquant":  # MatMul only, as HQQ/GPTQ: the embedding table goes through RTN
        from edgelm.techniques.quantize.kquant import kquant_matmuls

        kquant_matmuls(model, options.block_size, options.accuracy_level, options.exclude)
    elif options.algorithm == "affine":  # a tied table shares the LM head's 4 bits and its offsets
        from edgelm.techniques.quantize.affine import affine_matmuls

        head = [tied.lm_head] if tied and options.table_block_size else []
        affine_matmuls(model, options.block_size, options.accuracy_level, [*options.exclude, *head])
        if head:
            affine_matmuls(model, options.table_block_size, options.accuracy_level, options.exclude, only=head)
    else:
        model = _nbits_pass(model, options, ("MatMul",), _weight_only_algorithm(options, reader))
    if tied is not None and not _tie(model, tied, options):
        separate_gather = True  # the LM head is not a 4-bit MatMulNBits (e.g. act-order GPTQ): quantize the table
    if separate_gather and options.algorithm != "rtn" or tied is not None and separate_gather:
        model = _nbits_pass(model, options, ("Gather",), None)
    gather_tables_as_uint8(model)  # the .ort format has no int4 tensors
    if options.quantize_attention_weights:  # fused Attention / Gemm take no MatMulNBits: their weights go int8
        _int8_float_weights(model, options.exclude)
    model.metadata_props.append(onnx.StringStringEntryProto(key="edgelm.tied_embedding",
                                                            value=str(tied is not None and not separate_gather)))
    save_model(model, dst)


def _tie(model, tied, options: QuantOptions) -> bool:
    """The embedding lookup reads the LM head's 4-bit table (affine: plus its offsets, or no sharing)."""
    from edgelm.techniques.quantize.affine import can_tie_offsets, tie_offsets
    from edgelm.techniques.quantize.tied import tie_to_lm_head

    if options.algorithm != "affine":
        return tie_to_lm_head(model, tied, options.block_size)
    block = options.table_block_size or options.block_size
    if not can_tie_offsets(model, tied):  # checked first: the table must not be shared without its offsets
        return False
    return tie_to_lm_head(model, tied, block) and tie_offsets(model, tied, block)


def _weight_only_algorithm(options: QuantOptions, reader):
    from onnxruntime.quantization import matmul_nbits_quantizer as nbits

    if options.algorithm == "hqq":
        return nbits.HQQWeightOnlyQuantConfig(block_size=options.block_size, op_types_to_quantize=("MatMul",),
                                              quant_axes=INT4_AXES)
    if options.algorithm == "gptq":
        if reader is None:
            raise EdgelmError("int4 algorithm gptq needs calibration data; pass --data or use rtn/hqq")
        return nbits.GPTQWeightOnlyQuantConfig(calibration_data_reader=reader, block_size=options.block_size,
                                               op_types_to_quantize=("MatMul",))
    raise EdgelmError(f"int4 algorithm {options.algorithm!r}: unknown; use rtn, kquant, affine, hqq or gptq")


INT4_AXES = (("MatMul", 0), ("Gather", 1))


def _nbits_pass(model, options: QuantOptions, ops: tuple[str, ...], algo):
    import logging

    from onnxruntime.quantization import matmul_nbits_quantizer as nbits

    if algo is None:
        algo = nbits.DefaultWeightOnlyQuantConfig(block_size=options.block_size, is_symmetric=options.symmetric,
                                                  accuracy_level=options.accuracy_level, op_types_to_quantize=ops,
                                                  quant_axes=INT4_AXES)
    logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.ERROR)  # opset-21 notice
    quantizer = nbits.MatMulNBitsQuantizer(model, bits=4, block_size=options.block_size, is_symmetric=options.symmetric,
                                           accuracy_level=options.accuracy_level, nodes_to_exclude=options.exclude,
                                           op_types_to_quantize=ops, quant_axes=INT4_AXES, algo_config=algo)
    with np_errstate():
        quantizer.process()
    return quantizer.model.model


def np_errstate():
    import numpy as np

    return np.errstate(divide="ignore", invalid="ignore")  # zero-scale blocks are handled by np.where


def _fp16(src: Path, dst: Path, options: QuantOptions, _reader) -> None:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(src))
    # keep_io_types: callers keep feeding/reading float32; fused contrib ops are typed by the converter itself
    converted = convert_float_to_float16(model, keep_io_types=True, node_block_list=options.exclude or None,
                                         disable_shape_infer=_is_large(src))
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


def _is_large(path: Path) -> bool:
    return sum(f.stat().st_size for f in Path(path).parent.glob(Path(path).name + "*")) > TWO_GB


def strip_node_metadata(path: Path) -> None:
    """The exporter's per-node metadata (stack traces, module scopes: ~3.5 MB on SmolLM2) helps debugging the
    float graph, not an app: the quantized artifact ships without it. External weights stay where they are."""
    model = onnx.load(str(path), load_external_data=False)
    for node in model.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    onnx.save_model(model, str(path))


def save_model(model: onnx.ModelProto, dst: Path, external: bool = False) -> list[Path]:
    """Save as one file, or with one `<name>.data` sidecar when asked or when the weights pass the protobuf limit."""
    dst = Path(dst)
    data = dst.with_name(dst.name + ".data")
    for stale in (dst, data):  # also: onnx appends to an existing data file
        stale.unlink(missing_ok=True)
    if external or model.ByteSize() > TWO_GB:
        onnx.save_model(model, str(dst), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=data.name, size_threshold=1024)
        return [dst, data]
    onnx.save_model(model, str(dst))
    return [dst]


def model_files(path: Path) -> list[Path]:
    path = Path(path)
    return [p for p in (path, path.with_name(path.name + ".data")) if p.is_file()]


def size_mb(path: Path) -> float:
    """Model file(s) size in MB (10^6 bytes), as every `size_mb` (tokenizer files not counted)."""
    return files_mb(model_files(path))


def quantized_op_counts(path: Path) -> dict[str, int]:
    """How many quantized / float weight ops the graph holds (what the manifest and report show)."""
    counts: dict[str, int] = {}
    interesting = {"MatMulNBits", "GatherBlockQuantized", "MatMulInteger", "DynamicQuantizeLinear", "QLinearMatMul",
                   "DequantizeLinear", "QuantizeLinear", "MatMul", "Gemm", "Gather", "Cast"}
    for node in onnx.load(str(path), load_external_data=False).graph.node:
        if node.op_type in interesting:
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items()))
