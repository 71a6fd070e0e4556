"""Low-rank factorization: W ≈ P·Q by truncated SVD, plain or activation-aware (SVD-LLM whitening).

Activation-aware: with calibration inputs X and XᵀX = L·Lᵀ (Cholesky), the SVD of W·L truncated to rank r
minimises ‖(W − P·Q)·Xᵀ‖ — the error on real activations, not on the weights — with Q = V_rᵀ·L⁻¹.
A layer is factorized only where r·(in + out) < in·out, i.e. where it saves parameters and FLOPs.
"""

from __future__ import annotations

import fnmatch
from typing import Literal

from pydantic import Field, model_validator

from edgelm.core.metrics import param_mb
from edgelm.core.stage import Stage, StageConfig, StageResult, register_stage, require_model


class LowrankConfig(StageConfig):
    ratio: float | None = Field(None, gt=0, lt=1, description="fraction of parameters to remove from each factorized layer (default 0.25 when no rank rule is given)")
    energy: float | None = Field(None, gt=0, le=1, description="keep this fraction of (whitened) singular-value energy per layer")
    rank: int | None = Field(None, gt=0, description="explicit rank for every factorized layer")
    method: Literal["activation", "svd"] = Field("activation", description="activation: SVD-LLM whitening with calibration data; svd: plain truncated SVD of the weights")
    include: list[str] = Field(default_factory=list, description="extra module path globs to factorize (default: every Linear inside the transformer layers)")
    exclude: list[str] = Field(default_factory=list, description="module path globs never to factorize, e.g. '*.k_proj'")
    calib_samples: int = Field(64, gt=0, description="calibration sequences for the activation-aware method")
    calib_seq_len: int = Field(256, gt=1, description="tokens per calibration sequence")

    @model_validator(mode="after")
    def _one_rule(self):
        if sum(x is not None for x in (self.ratio, self.energy, self.rank)) > 1:
            raise ValueError("give only one of ratio, energy, rank")
        return self


@register_stage
class LowrankStage(Stage):
    kind = "lowrank"
    Config = LowrankConfig
    summary = "Factorize Linear layers by truncated (activation-aware) SVD"

    def run(self, bundle, config: LowrankConfig, ctx) -> StageResult:
        import copy

        require_model(bundle, self.kind)
        model = bundle.model
        targets = select_targets(model, config.include, config.exclude)
        grams = collect_grams(bundle, targets, config, ctx) if config.method == "activation" else {}
        new_model = copy.deepcopy(model)
        ops, rows = [], []
        for path in targets:
            row, op = factorize_into(new_model, path, config, grams.get(path))
            rows.append(row)
            if op:
                ops.append(op)
        before = sum(p.numel() for p in model.parameters())
        after = sum(p.numel() for p in new_model.parameters())
        extra = dict(bundle.extra, structure=list(bundle.extra.get("structure", [])) + ops)
        metrics = {
            "method": config.method, "params_before": before, "params_after": after,
            "param_reduction": round(1 - after / before, 4), "param_mb": param_mb(after),
            "factorized": len(ops), "not_factorized": len(rows) - len(ops), "layers": rows,
        }
        return StageResult(bundle.with_model(new_model.eval(), extra=extra), metrics)


def select_targets(model, include: list[str], exclude: list[str]) -> list[str]:
    from edgelm.models.anatomy import block_projections, is_projection

    paths = list(block_projections(model))
    paths += [n for n, m in model.named_modules() if is_projection(m) and any(fnmatch.fnmatch(n, g) for g in include)]
    seen = set()
    return [p for p in paths if not (p in seen or seen.add(p)) and not any(fnmatch.fnmatch(p, g) for g in exclude)]


def collect_grams(bundle, targets, config, ctx) -> dict:
    from edgelm.techniques.prune.calibrate import InputStats, calibration_batches, run_batches

    batches = calibration_batches(bundle, ctx.data, config.calib_samples, config.calib_seq_len, seed=ctx.seed)
    stats = InputStats(bundle.model, targets, gram=True)
    try:
        run_batches(bundle.model, batches, "lowrank: calibration")
    finally:
        stats.remove()
    return stats.gram


def weight_matrix(module):
    """(out, in) float64 weight of a Linear or GPT-2 Conv1D."""
    from edgelm.models.anatomy import weight_out_in

    return weight_out_in(module).detach().double()


def choose_rank(singular_values, n_in: int, n_out: int, config: LowrankConfig) -> int:
    if config.rank is not None:
        return config.rank
    if config.energy is not None:
        energy = (singular_values ** 2).cumsum(0) / (singular_values ** 2).sum()
        return int((energy < config.energy).sum().item()) + 1
    ratio = config.ratio if config.ratio is not None else 0.25
    return max(1, int((1 - ratio) * n_in * n_out / (n_in + n_out)))


def factorize_into(model, path: str, config: LowrankConfig, gram) -> tuple[dict, dict | None]:
    """Replace `path` in `model` by a LowRankLinear when that reduces parameters. Returns (table row, op)."""
    import torch

    from edgelm.models.structure import LowRankLinear, replace_module

    module = model.get_submodule(path)
    w = weight_matrix(module)
    n_out, n_in = w.shape
    whiten = whitening(gram) if gram is not None else None
    u, s, vh = torch.linalg.svd(w @ whiten if whiten is not None else w, full_matrices=False)
    rank = min(choose_rank(s, n_in, n_out, config), len(s))
    row = {"path": path, "in": n_in, "out": n_out, "rank": rank, "params_before": n_in * n_out}
    if rank * (n_in + n_out) >= n_in * n_out:
        return dict(row, factorized=False, reason="rank does not reduce parameters"), None
    p = u[:, :rank] * s[:rank]
    q = vh[:rank]
    if whiten is not None:
        q = torch.linalg.solve_triangular(whiten, q, upper=False, left=False)  # q · L⁻¹
    approx = p @ q
    row.update(factorized=True, params_after=rank * (n_in + n_out),
               weight_rel_error=round(_rel(w - approx, w), 5))
    if gram is not None:
        row["activation_rel_error"] = round(_rel((w - approx) @ whiten, w @ whiten), 5)
    bias = getattr(module, "bias", None)
    new = LowRankLinear(n_in, rank, n_out, bias=bias is not None)
    with torch.no_grad():
        new[0].weight.copy_(q.float())
        new[1].weight.copy_(p.float())
        if bias is not None:
            new[1].bias.copy_(bias.detach())
    replace_module(model, path, new)
    return row, {"op": "lowrank", "path": path, "in": n_in, "rank": rank, "out": n_out, "bias": bias is not None}


def whitening(gram):
    """Lower-triangular L with XᵀX + λI = L·Lᵀ; λ grows until the Cholesky succeeds (rank-deficient inputs)."""
    import torch

    g = gram.double()
    damp = 1e-6 * g.diagonal().mean().clamp(min=1e-12)
    eye = torch.eye(g.shape[0], dtype=g.dtype)
    for _ in range(8):
        chol, info = torch.linalg.cholesky_ex(g + damp * eye)
        if info.item() == 0:
            return chol
        damp *= 10
    raise RuntimeError("calibration Gram matrix is not positive definite even with damping")


def _rel(diff, ref) -> float:
    return (diff.norm() / ref.norm().clamp(min=1e-12)).item()
