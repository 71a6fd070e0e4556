"""Graph optimisation of a dynamo-exported ONNX model: onnxscript's ORT fusions, counted for the manifest.

`onnxscript.rewriter.ort_fusions.optimize_for_ort` matches the patterns torch.onnx's dynamo exporter emits
(RMSNorm -> SimplifiedLayerNormalization, SkipLayerNorm, Gelu/BiasGelu, rotary embedding, SDPA -> MHA / GQA)
for any architecture; onnxruntime's `transformers.optimizer` needs a model-type table and targets the older
TorchScript graphs, so it is not used here. The result is checked by parity like any other artifact and stays
plain ONNX + com.microsoft contrib ops, which onnxruntime.quantization handles (int8 MatMul, MatMulNBits).

The export stage fuses the exporter's in-memory graph (`optimize_model`) and saves once; `optimize_onnx`
rewrites a saved file for callers that only have the file.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

# onnxscript's generic clean-up rules include SlicesSplit (two Slices of one tensor -> Split), a two-output
# pattern its matcher tries against every Slice pair, rebuilding an op index of the whole graph per pair:
# O(slices x nodes) per pass, about 2/3 of all optimisation time on SmolLM2 (30 layers). It never fires on
# dynamo exports (their Slices carry a 5th `steps` input the pattern does not have), and the fused SmolLM2
# graph is byte-identical without it, so it is left out.
SLOW_UNUSED_RULES = ("SlicesSplit",)


@contextlib.contextmanager
def without_slow_rules():
    """onnxscript's optimizer (also run inside optimize_for_ort) without SLOW_UNUSED_RULES, restored after."""
    from onnxscript import rewriter

    rules = getattr(rewriter, "_DEFAULT_REWRITE_RULES", None)
    if rules is None:  # another onnxscript layout: run it as it is
        yield
        return
    rewriter._DEFAULT_REWRITE_RULES = tuple(r for r in rules if getattr(r, "name", None) not in SLOW_UNUSED_RULES)
    try:
        yield
    finally:
        rewriter._DEFAULT_REWRITE_RULES = rules


# The attention fusions (SDPA -> MultiHeadAttention and what builds on it) are the ones that have broken graphs
# (GPT-2 at head size >= 16: onnxruntime refuses a Gemm whose input they left 3-D); the second attempt leaves
# them out and keeps the norm, Gelu and rotary fusions.
ATTEMPTS = (("all fusions", ()), ("without the attention fusions", ("fuse_sdpa",)))
FUSION_ATOL = 1e-3


@contextlib.contextmanager
def without_fusions(names: tuple[str, ...]):
    """onnxscript's ORT fusion pass with the named `fuse_*` steps doing nothing, restored after."""
    from onnxscript.rewriter.ort_fusions import _core

    saved = {n: getattr(_core, n) for n in names if hasattr(_core, n)}
    for name in saved:
        setattr(_core, name, lambda model, debug=False, **kwargs: 0)
    try:
        yield
    finally:
        for name, func in saved.items():
            setattr(_core, name, func)


def optimize_model(model, skip: tuple[str, ...] = ()) -> tuple[object, dict]:
    """Fuse an in-memory `onnx_ir.Model` (in place); returns (model, {"fusions": {name: count}, ...})."""
    from onnxscript.rewriter.ort_fusions import optimize_for_ort

    started = time.time()
    nodes_before = _count_nodes(model)
    with without_slow_rules(), without_fusions(skip):
        model, counts = optimize_for_ort(model)
    fusions = {name: int(n) for name, n in sorted(counts.items()) if n}
    return model, {"optimizer": "onnxscript.rewriter.ort_fusions", "fusions": fusions, "nodes_before": nodes_before,
                   "nodes_after": _count_nodes(model), "seconds": round(time.time() - started, 2)}


def fuse_checked(path: Path) -> dict:
    """The onnxscript fusions on the saved graph at `path`, kept only when the fused graph passes the check
    (edgelm.export.checked); else the next of ATTEMPTS, else the graph as it was. Each refusal is one info line
    and a `fallbacks` entry in what is returned."""
    from edgelm.core.ui import info

    started, fallbacks = time.time(), []
    for label, skip in ATTEMPTS:
        result, reason = _fuse_attempt(path, skip)
        if reason is None:
            return result | {"attempt": label, "fallbacks": fallbacks, "seconds": round(time.time() - started, 2)}
        fallbacks.append(f"{label}: {reason}")
        info(f"graph fusions ({label}) not applied: {reason}")
    return {"optimizer": "onnxscript.rewriter.ort_fusions", "fusions": {}, "attempt": "none (graph as exported)",
            "fallbacks": fallbacks, "seconds": round(time.time() - started, 2)}


def _fuse_attempt(path: Path, skip: tuple[str, ...]) -> tuple[dict | None, str | None]:
    import onnx_ir as ir

    from edgelm.export.checked import accept, candidate_path, check_candidate, discard

    external = path.with_name(path.name + ".data").exists()
    try:
        model, result = optimize_model(ir.load(str(path)), skip)
        candidate = candidate_path(path)
        ir.save(model, str(candidate), external_data=(candidate.name + ".data") if external else None)
        del model
    except Exception as exc:  # an onnxscript rule that crashes is a refused rewrite
        return None, f"the fusion pass failed ({type(exc).__name__}: {' '.join(str(exc).split())[-200:]})"
    diff, reason = check_candidate(path, candidate, FUSION_ATOL)
    if reason is not None:
        discard(candidate)
        return None, reason
    accept(path, candidate)
    return result | {"max_diff": diff}, None


def optimize_onnx(path: Path, bundle=None) -> dict:
    """Rewrite `path` in place (same external-data layout), every rewrite checked; returns {"fusions": ..., ...}."""
    path = Path(path)
    started = time.time()
    info = fuse_checked(path)
    if bundle is not None and bundle.task == "causal-lm":
        info = fuse_decoder_attention(path, bundle, info)
    elif bundle is not None:
        info = decompose_encoder_norms(path, info)
    return info | {"seconds": round(time.time() - started, 2)}


def decompose_encoder_norms(path: Path, info: dict) -> dict:
    """After the onnxscript fusions of a saved encoder: LayerNorms as centring + RMS norm (edgelm.export.layernorm),
    recorded in `info`."""
    from edgelm.export.layernorm import decompose_file

    result = decompose_file(path)
    info["seconds"] = round(info["seconds"] + result.pop("seconds", 0.0), 2)
    info["layer_norm"] = result
    return info


def fuse_decoder_attention(path: Path, bundle, info: dict) -> dict:
    """After the onnxscript fusions of a saved KV-cache decoder: attention -> GroupQueryAttention (edgelm.export.gqa),
    recorded in `info` (its fusions, seconds and what the check measured or why nothing was rewritten)."""
    from edgelm.export.gqa import fuse_file

    why = length_dependent_attention(bundle.model.config)
    if why:  # what the rewrite would change only shows past the check's short prompt
        gqa = {"GroupQueryAttention": 0, "seconds": 0.0, "reason": f"{why} is not rewritten; MultiHeadAttention kept"}
    else:
        gqa = fuse_file(path)
    info["seconds"] = round(info["seconds"] + gqa.pop("seconds"), 2)
    info["fusions"]["GroupQueryAttention"] = gqa.pop("GroupQueryAttention")
    info["group_query_attention"] = gqa
    return info


def length_dependent_attention(config) -> str | None:
    """Why a decoder's attention depends on sequence length in ways the rewrite would drop (its mask is padding +
    causal, its rotary one fixed frequency table), else None."""
    window = sliding_window(config)
    if window:
        return f"sliding-window attention ({window} tokens)"
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    rope = getattr(text, "rope_scaling", None) or getattr(text, "rope_parameters", None) or {}
    kind = rope.get("rope_type", rope.get("type")) if isinstance(rope, dict) else None
    return f"rotary scaling {kind!r}" if kind in ("dynamic", "longrope") else None


def sliding_window(config) -> int | None:
    """The window of a model whose attention is (in some layers) limited to the last N tokens, else None."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    window = getattr(text, "sliding_window", None)
    if not window or getattr(text, "use_sliding_window", True) is False:
        return None
    layer_types = getattr(text, "layer_types", None)
    return int(window) if not layer_types or "sliding_attention" in layer_types else None


def _count_nodes(model) -> int:
    return sum(1 for _ in model.graph.all_nodes()) if hasattr(model.graph, "all_nodes") else len(model.graph)
