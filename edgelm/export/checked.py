"""One way to apply a graph rewrite to a saved export: rewrite a copy, run both graphs on onnxruntime, and keep the
rewrite only when their outputs agree, saved in the file's own layout (one file, or with model.onnx.data).
Used by the decoder attention (gqa) and encoder LayerNorm (layernorm) rewrites."""

from __future__ import annotations

import time
from pathlib import Path

import onnx


def rewrite_checked(path: Path, rewrite, difference, atol: float, count_key: str, diff_key: str,
                    nothing: str) -> dict:
    """rewrite(model) -> {count_key: n, ...} (n == 0: nothing to rewrite, `nothing` is the reason);
    difference(original, rewritten) -> float, compared with `atol`. Returns the figures, or the count 0 and the
    reason the file was left alone, plus the seconds it took."""
    from edgelm.export.onnx_io import save_model

    started, path = time.time(), Path(path)
    original = onnx.load(str(path))
    model = onnx.ModelProto()
    model.CopyFrom(original)
    figures = rewrite(model)
    reason = None
    if not figures[count_key]:
        reason = nothing
    else:
        try:
            diff = float(difference(original, model))
        except Exception as exc:  # onnxruntime refused the rewritten graph: keep the original, say why
            diff, reason = None, f"onnxruntime cannot run the rewritten graph: {str(exc)[-200:]}"
        if diff is not None and not diff <= atol:
            reason = f"rewritten graph differs from the original (max diff {diff:.3g})"
    if reason is not None:
        return {count_key: 0, "reason": reason, "seconds": time.time() - started}
    save_model(model, path, external=path.with_name(path.name + ".data").exists())
    return {**figures, diff_key: diff, "seconds": time.time() - started}
