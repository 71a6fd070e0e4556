"""AWQ-style per-input-channel scaling folded into the graph's own weights (edgelm.techniques.quantize.calibrated
explains the search): a group of MatMuls reading one tensor gets rows s·W, and the tensor's producer is made to
emit x/s — a (Skip)(Simplified)LayerNormalization through its scale (and bias), an unfused norm's Mul by its weight
vector, or the Mul of a gated MLP through the columns of its up projection (a MatMul, or one Split part of a fused gate/up MatMul). The graph gains no op.
Groups whose tensor has other readers, whose producer cannot fold or that hold a kept node are left alone."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from edgelm.techniques.quantize.calibrated import ALPHAS, Moments, _minmax, blocked, quantizable_matmuls

NORM_SCALE = {"SimplifiedLayerNormalization": (1,), "LayerNormalization": (1, 2),
              "SkipSimplifiedLayerNormalization": (2,), "SkipLayerNormalization": (2, 3)}
SEARCH_COLUMNS = 1024  # output columns the alpha search scores (a seeded sample of wider groups)


def fold_scales(model: onnx.ModelProto, moments: dict[str, Moments], block: int, exclude=(), keep=()) -> int:
    """Scale every foldable group (see the module docstring); `moments` are updated to the scaled inputs.
    Returns how many groups were scaled."""
    groups: dict[str, list] = {}
    for node in quantizable_matmuls(model, exclude):
        groups.setdefault(node.input[0], []).append(node)
    done = 0
    for tensor, nodes in groups.items():
        fold = None if {n.name for n in nodes} & set(keep) or tensor not in moments else _folder(model, tensor, nodes)
        if fold is not None and _scale_group(model, nodes, moments[tensor], block, fold):
            done += 1
    return done


def _scale_group(model, nodes, m: Moments, block: int, fold) -> bool:
    weights = [_array(model, n.input[1]) for n in nodes]
    s = best_scale(weights, m.h, block)
    if s is None:
        return False
    fold(1.0 / s)
    for node, w in zip(nodes, weights):
        _set(model, node.input[1], w * s[:, None])
    m.h = m.h / s[:, None] / s[None, :]
    return True


def best_scale(weights: list[np.ndarray], h: np.ndarray, block: int) -> np.ndarray | None:
    """s = E[x²]^(α/2) (normalised) for the α of ALPHAS with the least output error; None when α = 0 wins."""
    rng = np.random.default_rng(0)
    sample = [w[:, rng.choice(w.shape[1], SEARCH_COLUMNS, replace=False)] if w.shape[1] > SEARCH_COLUMNS else w
              for w in weights]
    power = np.maximum(np.diag(h), 1e-12)
    errors = [(sum(_output_error(w, _scales(power, a), h, block) for w in sample), a) for a in ALPHAS]
    alpha = min(errors)[1]
    return None if alpha == 0 else _scales(power, alpha).astype(np.float32)


def _scales(power: np.ndarray, alpha: float) -> np.ndarray:
    s = power ** (alpha / 2)
    return s / np.sqrt(s.max() * s.min())


def _output_error(w: np.ndarray, s: np.ndarray, h: np.ndarray, block: int) -> float:
    """tr(Dᵀ H D) with D = W - Q(s·W)/s: the expected squared output error of the rounded group."""
    scaled = w * s[:, None]
    scale, zero = _minmax(blocked(scaled, block))
    codes = np.clip(np.round(blocked(scaled, block) / scale[..., None]) + zero[..., None], 0, 15)
    rounded = ((codes - zero[..., None]) * scale[..., None]).reshape(w.shape[1], -1)[:, :w.shape[0]].T
    d = w - rounded / s[:, None]
    return float(((h @ d) * d).sum())


# --- where x/s can be folded ---------------------------------------------------------------------------------
def _folder(model: onnx.ModelProto, tensor: str, nodes):
    """A function applying x -> x * inv to `tensor` through its producer's weights, or None."""
    if sorted(_readers(model, tensor)) != sorted(n.name for n in nodes):
        return None
    producer = next((n for n in model.graph.node if tensor in n.output), None)
    if producer is None:
        return None
    if producer.op_type in NORM_SCALE and producer.output[0] == tensor:
        names = [producer.input[i] for i in NORM_SCALE[producer.op_type] if i < len(producer.input) and producer.input[i]]
        return _scale_initializers(model, names)
    if producer.op_type == "Mul":
        gamma = [t for t in producer.input if _is_vector(model, t, len(_moment_size(model, nodes)))]
        if gamma:  # an unfused RMSNorm's last Mul by its weight
            return _scale_initializers(model, gamma[:1])
        return next(filter(None, (_up_columns(model, t, producer) for t in producer.input)), None)
    return None


def _scale_initializers(model, names: list[str]):
    inits = {t.name for t in model.graph.initializer}
    if not all(n in inits and len(_readers(model, n)) == 1 for n in names):
        return None
    return lambda inv: [_set(model, n, _array(model, n) * inv) for n in names]


def _up_columns(model, tensor: str, mul):
    """The columns of the MatMul weight `tensor` comes from (directly or as one part of a last-axis Split)."""
    if _readers(model, tensor) != [mul.name]:
        return None
    producer = next((n for n in model.graph.node if tensor in n.output), None)
    start, width = 0, None
    if producer is not None and producer.op_type == "Split":
        start, width = _split_part(model, producer, tensor) or (None, None)
        if start is None or _readers(model, producer.input[0]) != [producer.name]:
            return None
        producer = next((n for n in model.graph.node if producer.input[0] in n.output), None)
    if producer is None or producer.op_type != "MatMul" or not _is_float_weight(model, producer.input[1]):
        return None
    weight = producer.input[1]
    if len(_readers(model, weight)) != 1:
        return None
    end = start + (width if width is not None else _array(model, weight).shape[1])

    def fold(inv):
        w = _array(model, weight)
        w[:, start:end] *= inv
        _set(model, weight, w)

    return fold


def _split_part(model, split, tensor: str) -> tuple[int, int] | None:
    attrs = {a.name: a for a in split.attribute}
    if (attrs["axis"].i if "axis" in attrs else 0) not in (-1, 2):  # the last axis of [batch, tokens, features]
        return None
    sizes = list(attrs["split"].ints) if "split" in attrs else \
        list(_array(model, split.input[1])) if len(split.input) > 1 and split.input[1] else None
    if sizes is None:
        return None
    i = list(split.output).index(tensor)
    return int(sum(sizes[:i])), int(sizes[i])


# --- graph helpers ---------------------------------------------------------------------------------------------
def _readers(model, name: str) -> list[str]:
    return [n.name for n in model.graph.node if name in n.input]


def _moment_size(model, nodes) -> range:
    return range(_array(model, nodes[0].input[1]).shape[0])


def _is_vector(model, name: str, size: int) -> bool:
    t = next((t for t in model.graph.initializer if t.name == name), None)
    return t is not None and t.data_type == onnx.TensorProto.FLOAT and list(t.dims) == [size]


def _is_float_weight(model, name: str) -> bool:
    t = next((t for t in model.graph.initializer if t.name == name), None)
    return t is not None and t.data_type == onnx.TensorProto.FLOAT and len(t.dims) == 2


def _array(model, name: str) -> np.ndarray:
    return numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == name)).copy()


def _set(model, name: str, value: np.ndarray) -> None:
    t = next(t for t in model.graph.initializer if t.name == name)
    t.CopyFrom(numpy_helper.from_array(value.astype(numpy_helper.to_array(t).dtype), name))
