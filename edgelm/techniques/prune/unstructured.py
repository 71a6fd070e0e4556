"""Unstructured and N:M sparsity masks (magnitude or Wanda |W|·‖X‖), applied by zeroing weights.

Shapes do not change, so dense CPU runtimes (torch, onnxruntime, ExecuTorch/XNNPACK) do NOT get faster or
smaller from these masks; the figure reported is sparsity. N:M (2:4) only pays off on hardware with sparse
tensor cores, or after compression of the zeros by a sparse-aware format.
"""

from __future__ import annotations

from edgelm.core.errors import EdgelmError
from edgelm.models.anatomy import weight_out_in

DENSE_NOTE = ("weights are zeroed, not removed: dense CPU runtimes do not run faster or use less memory "
              "from unstructured or N:M sparsity")


def parse_pattern(pattern: str) -> tuple[int, int] | None:
    """None for unstructured, (n, m) for 'n:m' (keep n of every m consecutive inputs)."""
    if pattern == "unstructured":
        return None
    try:
        n, m = (int(x) for x in pattern.split(":"))
    except ValueError:
        raise EdgelmError(f"pattern {pattern!r}: use 'unstructured' or 'N:M' such as '2:4'") from None
    if not 0 < n < m:
        raise EdgelmError(f"pattern {pattern!r}: need 0 < N < M")
    return n, m


def mask_weights(model, paths: list[str], sparsity: float, pattern: str, input_norms: dict | None) -> dict:
    """Zero weights of `paths` in place; returns {"sparsity", "zeroed", "total", "note"}."""
    import torch

    nm = parse_pattern(pattern)
    zeroed = total = 0
    with torch.no_grad():
        for path in paths:
            w = weight_out_in(model.get_submodule(path))
            score = w.abs().float()
            if input_norms is not None:
                score = score * input_norms[path].to(score.dtype).unsqueeze(0)
            mask = _nm_mask(score, *nm) if nm else _row_mask(score, sparsity)
            w.mul_(mask.to(w.dtype))
            zeroed += int((~mask).sum())
            total += mask.numel()
    return {"sparsity": round(zeroed / max(total, 1), 4), "zeroed": zeroed, "total": total, "pattern": pattern,
            "note": DENSE_NOTE}


def _row_mask(score, sparsity: float):
    """Per output row, drop the `sparsity` fraction of lowest scores (Wanda's comparison group)."""
    k = int(score.shape[1] * sparsity)
    mask = score.new_ones(score.shape, dtype=bool)
    if k:
        drop = score.topk(k, dim=1, largest=False).indices
        mask.scatter_(1, drop, False)
    return mask


def _nm_mask(score, n: int, m: int):
    out_dim, in_dim = score.shape
    if in_dim % m:
        raise EdgelmError(f"N:M pattern needs input width divisible by {m}; a layer has {in_dim}")
    groups = score.reshape(out_dim, in_dim // m, m)
    keep = groups.topk(n, dim=-1).indices
    mask = groups.new_zeros(groups.shape, dtype=bool).scatter_(-1, keep, True)
    return mask.reshape(out_dim, in_dim)
