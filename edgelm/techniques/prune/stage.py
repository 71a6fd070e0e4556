"""Structured pruning (attention heads / KV groups, FFN neurons, whole layers) and unstructured/N:M masks.

Structured pruning removes rows and columns, so the model is smaller and faster on every runtime. Sparsity
masks only zero weights: dense CPU runtimes do not get faster from them (reported as sparsity).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from edgelm.core.errors import EdgelmError
from edgelm.core.metrics import param_mb
from edgelm.core.registry import Name
from edgelm.core.stage import Stage, StageConfig, StageResult, register_stage, require_model
from edgelm.techniques.prune.importance import IMPORTANCE_SCORES, summaries


class PruneConfig(StageConfig):
    heads: float | None = Field(None, ge=0, lt=1, description="fraction of attention heads to remove (whole KV groups under GQA, so queries and their key/value head stay together)")
    ffn: float | None = Field(None, ge=0, lt=1, description="fraction of FFN neurons to remove")
    drop_layers: int | None = Field(None, ge=0, description="number of whole layers to drop (those that change their input least)")
    importance: Name(IMPORTANCE_SCORES) = Field("activation", description=f"unit importance: {summaries()}")
    scope: Literal["uniform", "global"] = Field("uniform", description="uniform: every layer loses the same fraction; global: one ranking across layers")
    round_to: int = Field(8, ge=1, description="kept FFN sizes are rounded to a multiple of this (use 1 for tiny models)")
    sparsity: float | None = Field(None, gt=0, lt=1, description="unstructured sparsity: fraction of weights to zero in the transformer layers (no speedup on dense runtimes)")
    sparsity_method: Literal["wanda", "magnitude"] = Field("wanda", description="score for sparsity masks: wanda (|W|·‖X‖) or magnitude (|W|)")
    pattern: str = Field("unstructured", description="sparsity pattern: unstructured, or N:M such as 2:4 (implies N/M density)")
    calib_samples: int = Field(64, gt=0, description="calibration sequences for importance and layer influence")
    calib_seq_len: int = Field(256, gt=1, description="tokens per calibration sequence")
    vocab_reserve: int | None = Field(None, ge=0, description="also prune the vocabulary to the pieces --data uses plus this many of the most frequent others (vocab-prune; default: off)")
    verify: bool = Field(True, description="check that the cut model equals the original with the pruned units zeroed")


@register_stage
class PruneStage(Stage):
    kind = "prune"
    Config = PruneConfig
    summary = "Structured pruning of heads, FFN neurons and layers; unstructured / N:M sparsity masks"

    def run(self, bundle, config: PruneConfig, ctx) -> StageResult:
        from edgelm.models.anatomy import find_layers
        from edgelm.techniques.prune.calibrate import calibration_batches

        require_model(bundle, self.kind)
        wants_structure = bool(config.heads or config.ffn or config.drop_layers)
        if not wants_structure and not config.sparsity and config.pattern == "unstructured" and config.vocab_reserve is None:
            raise EdgelmError("prune: nothing to do; give --heads, --ffn, --drop-layers, --sparsity or --pattern 2:4")
        if any(op["op"] == "lowrank" for op in bundle.extra.get("structure", [])):
            raise EdgelmError("prune: this model is already factorized (lowrank); prune before lowrank")
        model = bundle.model
        layers = find_layers(model)
        batches = calibration_batches(bundle, ctx.data, config.calib_samples, config.calib_seq_len, seed=ctx.seed)
        metrics = {"params_before": _params(model), "importance": config.importance, "scope": config.scope}
        ops = list(bundle.extra.get("structure", []))
        extra = {k: v for k, v in bundle.extra.items() if k != "structure"}
        if wants_structure:
            model, ops, table = structured(model, layers, batches, bundle.task, config)
            metrics["layers"] = table
            if any(row["dropped"] for row in table):  # the layer map distillation uses by default
                before = bundle.extra.get("kept_layers") or list(range(len(table)))
                extra["kept_layers"] = [before[row["layer"]] for row in table if not row["dropped"]]
        if config.sparsity or config.pattern != "unstructured":
            model = model if wants_structure else _copy(model)
            metrics["sparsity"] = sparsify(model, batches, config)
        after = _params(model)
        metrics.update(params_after=after, param_reduction=round(1 - after / metrics["params_before"], 4),
                       param_mb=param_mb(after))
        if ops:
            extra["structure"] = ops
        pruned = bundle.with_model(model.eval(), extra=extra)
        if config.vocab_reserve is not None:
            pruned, vocab_metrics = prune_vocab(pruned, config.vocab_reserve, ctx)
            metrics.update(vocab_metrics)
        return StageResult(pruned, metrics)


def prune_vocab(bundle, reserve: int, ctx):
    """The vocabulary cut to the pieces the task's texts use (edgelm.techniques.vocab); (bundle, metrics)."""
    from edgelm.techniques.vocab.stage import VOCAB_KEY, prune_vocabulary, scanned_texts

    model, tokenizer, metrics, kept = prune_vocabulary(bundle, scanned_texts(ctx, None), reserve)
    return bundle.with_model(model, tokenizer=tokenizer, extra={**bundle.extra, VOCAB_KEY: kept}), metrics


def structured(model, layers, batches, task, config: PruneConfig):
    from edgelm.techniques.prune import scoring, select, surgery

    drop = []
    if config.drop_layers:
        drop = select.layers_to_drop(scoring.layer_influence(model, batches), config.drop_layers)
    head_scores, neuron_scores = {}, {}
    if config.heads or config.ffn:
        head_scores, neuron_scores = IMPORTANCE_SCORES.get(config.importance).score(model, layers, batches, task)
    plan = select.make_plan(head_scores, neuron_scores, heads=config.heads, ffn=config.ffn, scope=config.scope,
                            multiple=config.round_to, drop=drop)
    new_model, ops = surgery.apply_plan(model, layers, plan)
    if config.verify and not drop and (plan.keep_groups or plan.keep_neurons):
        check_exact(model, new_model, layers, plan, batches[0])
    table = [{"layer": l.index, "dropped": l.index in drop,
              "kv_groups": len(plan.keep_groups.get(l.index, range(l.attention.groups))) if l.attention else None,
              "heads": (len(plan.keep_groups.get(l.index, range(l.attention.groups))) * l.attention.heads_per_group)
              if l.attention else None,
              "ffn": len(plan.keep_neurons.get(l.index, range(l.mlp.neurons))) if l.mlp else None} for l in layers]
    return new_model, ops, table


def check_exact(original, pruned, layers, plan, batch) -> None:
    """The cut model must compute what the original computes with the pruned units' outputs zeroed."""
    import torch

    from edgelm.techniques.prune import coupling

    masked = _copy(original)
    by_index = {l.index: l for l in layers}
    with torch.no_grad():
        for i, groups in plan.keep_groups.items():
            att = by_index[i].attention
            gone = sorted(set(range(att.groups)) - set(groups))
            _zero_inputs(masked.get_submodule(att.o), coupling.o_columns(att, gone))
        for i, keep in plan.keep_neurons.items():
            mlp = by_index[i].mlp
            _zero_inputs(masked.get_submodule(mlp.down), sorted(set(range(mlp.neurons)) - set(keep)))
        expected = _first_output(masked, batch.inputs)
        try:
            got = _first_output(pruned, batch.inputs)
        except RuntimeError as exc:
            got, error = None, str(exc).splitlines()[0]
    if got is None or not torch.allclose(expected, got, rtol=1e-3, atol=1e-4):
        diff = error if got is None else f"max diff {(expected - got).abs().max().item():.3g}"
        raise EdgelmError(f"prune: {type(original).__name__} surgery is not exact ({diff}); this "
                          "architecture's attention reads head counts from its config, use --scope uniform")


def _zero_inputs(module, columns):
    from edgelm.models.anatomy import weight_out_in

    weight_out_in(module)[:, columns] = 0


def _first_output(model, inputs):
    out = model(**inputs)
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


def sparsify(model, batches, config: PruneConfig) -> dict:
    from edgelm.models.anatomy import block_projections
    from edgelm.techniques.prune.calibrate import InputStats, run_batches
    from edgelm.techniques.prune.unstructured import mask_weights

    paths = list(block_projections(model))
    norms = None
    if config.sparsity_method == "wanda":
        stats = InputStats(model, paths)
        try:
            run_batches(model, batches, "prune: sparsity calibration")
        finally:
            stats.remove()
        norms = {p: stats.channel_norms(p) for p in paths}
    return mask_weights(model, paths, config.sparsity or 0.0, config.pattern, norms)


def _copy(model):
    import copy

    return copy.deepcopy(model)


def _params(model) -> int:
    return sum(p.numel() for p in model.parameters())
