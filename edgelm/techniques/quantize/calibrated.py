"""Activation-aware int4 that decodes at plain MatMulNBits speed: every MatMul becomes one asymmetric 4-bit
MatMulNBits (integer zero points, which the tied GatherBlockQuantized table shares); nothing is added to the graph.

Calibration: one onnxruntime pass over the calibration feeds with every MatMul input as an extra output gives each
input's second moment H = E[x xᵀ] (K x K). From it:
- importance-weighted blocks (imatrix-like): each block's scale and integer zero point minimise the error weighted
  by the input channel's mean square activation diag(H) (a shrink grid of the min/max range, each refitted by
  weighted least squares on the scale);
- GPTQ: columns rounded in act-order (largest diag(H) first) with the error pushed onto the not-yet-rounded
  columns through the Cholesky factor of H⁻¹ (10% damping, lazy batches of 128); the block parameters are fixed up
  front from the original weights ("static groups"), so act-order needs no g_idx and the blocks stay MatMulNBits';
- AWQ-style scaling: per input channel s = E[x²]^(α/2), with α from a grid minimising the output error
  tr(Dᵀ H D) of the group's rounded weights, folded into the norm weight before the MatMuls (x/s) and the MatMul
  rows (s·W), or into the up projection's columns before the down projection — no extra Mul in the graph.

onnxruntime's own GPTQ (matmul_nbits_quantizer.GPTQWeightOnlyQuantConfig) runs the whole model once per MatMul
input per calibration batch and re-rounds its act-order result onto min/max blocks; this module runs the model
once and keeps the GPTQ codes as they are.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgelm.techniques.quantize.packing import nbits_attrs, pack_nibbles, replace_float_matmuls

MAXQ = 15
SHRINK = (1.0, 0.96, 0.92, 0.88, 0.84, 0.8, 0.75)
ALPHAS = (0.0, 0.2, 0.35, 0.5, 0.65, 0.8)
# GPTQ's damping, a fraction of H's mean diagonal added to it. 0.1 rather than the paper's 0.01: on SmolLM2-135M
# (block 64, built-in prose calibration) it holds up better on text unlike the calibration set (licence text: KLD
# 0.196 vs 0.208, ppl ratio 1.173 vs 1.190) and is no worse on held-out prose (KLD 0.095 vs 0.098).
DAMP = 0.1
COLUMN_CHUNK = 4096  # output columns per step of the block search (bounds the memory on the LM head)


@dataclass
class Moments:
    """E[x xᵀ] of one MatMul input over the calibration tokens."""

    h: np.ndarray  # [K, K] float64
    tokens: int


# --- calibration -------------------------------------------------------------------------------------------
def quantizable_matmuls(model: onnx.ModelProto, exclude=()) -> list:
    inits = {t.name: t for t in model.graph.initializer}
    return [n for n in model.graph.node if n.op_type == "MatMul" and n.name not in exclude and n.input[1] in inits
            and len(inits[n.input[1]].dims) == 2 and inits[n.input[1]].data_type == onnx.TensorProto.FLOAT]


def input_moments(model: onnx.ModelProto, reader, exclude=()) -> dict[str, Moments]:
    """{MatMul input tensor: its moments} from one onnxruntime pass over the reader's feeds."""
    import onnxruntime as ort

    names = sorted({n.input[0] for n in quantizable_matmuls(model, exclude)})
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.extend(helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in names)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    del probe
    sums: dict[str, Moments] = {}
    for feeds in _feeds(reader):
        for name, x in zip(names, session.run(names, feeds)):
            _accumulate(sums, name, np.asarray(x, np.float32).reshape(-1, x.shape[-1]))
    return {name: Moments(m.h / max(m.tokens, 1), m.tokens) for name, m in sums.items()}


def _feeds(reader):
    if hasattr(reader, "rewind"):
        reader.rewind()
    return iter(reader)


def _accumulate(sums: dict, name: str, x: np.ndarray) -> None:
    m = sums.setdefault(name, Moments(np.zeros((x.shape[1], x.shape[1])), 0))
    m.h += (x.T @ x).astype(np.float64)
    m.tokens += len(x)


# --- block parameters ----------------------------------------------------------------------------------------
def blocked(w: np.ndarray, block: int) -> np.ndarray:
    """[K, N] -> [N, blocks, block], K padded with zeros to whole blocks (MatMulNBits' own padding)."""
    k, n = w.shape
    blocks = -(-k // block)
    return np.pad(w, ((0, blocks * block - k), (0, 0))).T.reshape(n, blocks, block)


def block_params(w: np.ndarray, importance: np.ndarray | None, block: int) -> tuple[np.ndarray, np.ndarray]:
    """(scale [N, blocks] float32, zero [N, blocks] uint8) per block of `w` [K, N]: min/max when `importance` is
    None, else the importance-weighted search (importance [K]: the input channels' mean square activation)."""
    if importance is None:
        return _minmax(blocked(w, block))
    a = blocked(importance[:, None].astype(np.float32), block)[0][None]  # [1, blocks, block]; padding weighs 0
    parts = [_weighted(blocked(w[:, i:i + COLUMN_CHUNK], block), a) for i in range(0, w.shape[1], COLUMN_CHUNK)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _minmax(b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = np.minimum(b.min(-1), 0), np.maximum(b.max(-1), 0)
    scale = np.where(hi > lo, (hi - lo) / MAXQ, 1.0)
    return scale.astype(np.float32), np.clip(np.round(-lo / scale), 0, MAXQ).astype(np.uint8)


def _weighted(b: np.ndarray, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The shrink whose least-squares-refitted scale gives the smallest importance-weighted block error."""
    b = b.astype(np.float32)
    lo, hi = np.minimum(b.min(-1), 0), np.maximum(b.max(-1), 0)
    best = (np.full(lo.shape, np.inf, np.float32), *_minmax(b))
    for p in SHRINK:
        scale = np.where(hi > lo, (hi - lo) * p / MAXQ, 1.0).astype(np.float32)
        zero = np.clip(np.round(-lo * p / scale), 0, MAXQ)
        scale = _refit(b, a, scale, zero)
        err = _block_error(b, a, scale, zero)
        better = err < best[0]
        best = (np.where(better, err, best[0]), np.where(better, scale, best[1]), np.where(better, zero, best[2]))
    return best[1].astype(np.float32), best[2].astype(np.uint8)


def _codes(b, scale, zero):
    return np.clip(np.round(b / scale[..., None]) + zero[..., None], 0, MAXQ)


def _refit(b, a, scale, zero):
    """Weighted least-squares scale for the codes this scale and zero point give."""
    c = _codes(b, scale, zero) - zero[..., None]
    num, den = (a * b * c).sum(-1), (a * c * c).sum(-1)
    return np.where(den > 0, num / np.maximum(den, 1e-30), scale).astype(np.float32)


def _block_error(b, a, scale, zero):
    return (a * (b - scale[..., None] * (_codes(b, scale, zero) - zero[..., None])) ** 2).sum(-1)


def round_blocks(w: np.ndarray, scale: np.ndarray, zero: np.ndarray, block: int) -> np.ndarray:
    """Codes [N, blocks, block] uint8 of `w` [K, N] on the given block parameters."""
    return _codes(blocked(w, block), scale, zero.astype(np.float32)).astype(np.uint8)


def dequantized(codes: np.ndarray, scale: np.ndarray, zero: np.ndarray, k: int) -> np.ndarray:
    """[K, N] float weights the codes stand for."""
    w = (codes.astype(np.float32) - zero[..., None]) * scale[..., None]
    return w.reshape(w.shape[0], -1)[:, :k].T


# --- GPTQ ------------------------------------------------------------------------------------------------------
def gptq_codes(w: np.ndarray, h: np.ndarray, scale: np.ndarray, zero: np.ndarray, block: int,
               damp: float = DAMP, lazy: int = 128) -> np.ndarray:
    """GPTQ with act-order on fixed block parameters: codes [N, blocks, block] uint8 (see the module docstring)."""
    k, n = w.shape
    w, h = w.astype(np.float64).copy(), h.copy()
    dead = np.diag(h) == 0
    h[dead, dead], w[dead, :] = 1.0, 0.0
    perm = np.argsort(-np.diag(h), kind="stable")
    w, h = w[perm], h[perm][:, perm]
    h[np.diag_indices(k)] += damp * np.mean(np.diag(h))
    hinv = np.linalg.cholesky(np.linalg.inv(h)).T.astype(np.float32)  # upper; the updates run in float32 (as GPTQ's)
    w = w.astype(np.float32)
    s, z = scale.T.astype(np.float32)[perm // block], zero.T.astype(np.float32)[perm // block]  # [K, N] per row
    codes = np.zeros((k, n), np.uint8)
    for i1 in range(0, k, lazy):
        i2 = min(i1 + lazy, k)
        err = _gptq_batch(w, hinv, s, z, codes, i1, i2)
        w[i2:] -= hinv[i1:i2, i2:].T @ err
    out = np.empty((scale.shape[1] * block, n), np.uint8)
    out[:] = zero[:, -1]  # padding rows decode to 0
    out[perm] = codes
    return out.T.reshape(n, -1, block)


def _gptq_batch(w, hinv, s, z, codes, i1, i2) -> np.ndarray:
    w1, err = w[i1:i2].copy(), np.zeros((i2 - i1, w.shape[1]), np.float32)
    for i in range(i2 - i1):
        row = i1 + i
        q = np.clip(np.round(w1[i] / s[row]) + z[row], 0, MAXQ)
        codes[row] = q
        err[i] = (w1[i] - (q - z[row]) * s[row]) / hinv[row, row]
        w1[i:] -= np.outer(hinv[row, i1 + i:i2], err[i])
    return err


# --- writing ---------------------------------------------------------------------------------------------------
def write_matmul_nbits(model: onnx.ModelProto, node, weight, codes, scale, zero, block: int, accuracy_level) -> None:
    """Replace `node` by one asymmetric MatMulNBits (codes [N, blocks, block], integer zero points)."""
    name, n = weight.name, codes.shape[0]
    zp = np.pad(zero, ((0, 0), (0, zero.shape[1] % 2)))
    model.graph.initializer.extend([numpy_helper.from_array(pack_nibbles(codes), f"{name}_Q4"),
                                    numpy_helper.from_array(scale.astype(np.float32), f"{name}_scales"),
                                    numpy_helper.from_array(pack_nibbles(zp).reshape(n, -1), f"{name}_zero_points")])
    new = helper.make_node("MatMulNBits", [node.input[0], f"{name}_Q4", f"{name}_scales", f"{name}_zero_points"],
                           list(node.output), name=f"{node.name}_Q4", domain="com.microsoft",
                           **nbits_attrs(weight, block, accuracy_level))
    at = list(model.graph.node).index(node)
    model.graph.node.remove(node)
    model.graph.node.insert(at, new)


def quantize_calibrated(model: onnx.ModelProto, moments: dict[str, Moments], block: int, accuracy_level,
                        exclude=(), rounding: str = "weighted", budget_mb: float = 0.0, sizes=None) -> int:
    """Every quantizable MatMul to MatMulNBits; rounding: minmax | weighted | gptq (weighted block parameters).
    `sizes` {node name: block} overrides `block` for some MatMuls (a tied LM head's `table_block_size`).
    With `budget_mb`, the other MatMuls whose measured output error falls most per extra byte take half-size
    blocks until the extra size would pass the budget (`finer_blocks`)."""
    sizes = dict(sizes or {})
    finer = finer_blocks(model, moments, block, [*exclude, *sizes], budget_mb) if budget_mb > 0 else set()

    def rewrite(node, weight):
        size = sizes.get(node.name, block // 2 if node.name in finer else block)
        w, m = numpy_helper.to_array(weight).astype(np.float32), moments.get(node.input[0])
        importance = None if m is None or rounding == "minmax" else np.diag(m.h)
        scale, zero = block_params(w, importance, size)
        codes = gptq_codes(w, m.h, scale, zero, size) if rounding == "gptq" and m is not None else \
            round_blocks(w, scale, zero, size)
        write_matmul_nbits(model, node, weight, codes, scale, zero, size, accuracy_level)

    return replace_float_matmuls(model, rewrite, exclude)


# --- mixed precision -------------------------------------------------------------------------------------------
BLOCK_BYTES = 4.5  # a float32 scale and a 4-bit zero point per block


def finer_blocks(model: onnx.ModelProto, moments: dict[str, Moments], block: int, exclude, budget_mb: float) -> set[str]:
    """Names of the MatMuls to quantize at block / 2: greedily by relative output error saved per extra byte,
    within `budget_mb` (none when block / 2 is under MatMulNBits' 16)."""
    if block // 2 < 16:
        return set()
    gains = []
    for node in quantizable_matmuls(model, exclude):
        if node.input[0] in moments:
            w = numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == node.input[1]))
            h = moments[node.input[0]].h
            saved = relative_error(w, h, block) - relative_error(w, h, block // 2)
            gains.append((saved / _extra_bytes(w.shape, block), node.name, _extra_bytes(w.shape, block)))
    chosen, spent = set(), 0.0
    for _, name, cost in sorted(gains, reverse=True):
        if spent + cost <= budget_mb * 1e6:
            chosen.add(name)
            spent += cost
    return chosen


def relative_error(w: np.ndarray, h: np.ndarray, block: int) -> float:
    """tr(Dᵀ H D) / tr(Wᵀ H W) for D the weighted-block rounding error of `w`: the output error it adds."""
    w = w.astype(np.float32)
    scale, zero = block_params(w, np.diag(h), block)
    d = w - dequantized(round_blocks(w, scale, zero, block), scale, zero.astype(np.float32), w.shape[0])
    hf = h.astype(np.float32)
    return float(((hf @ d) * d).sum() / max(((hf @ w) * w).sum(), 1e-30))


def _extra_bytes(shape, block: int) -> float:
    k, n = shape
    return n * (-(-k // (block // 2)) - -(-k // block)) * BLOCK_BYTES
