"""Importance of pruning units from calibration data — scores only, no cutting. The scores the prune stage
chooses from (`importance`) are registered by name in prune/importance/ and computed here:

- magnitude:  ‖weights the unit owns‖₂ (q/k/v rows + o columns of a KV group; up/gate rows + down column)
- activation: Σ over the unit's input channels of the down/o projection of ‖X_j‖₂·‖W[:, j]‖₂ (Wanda-style)
- taylor:     Σ |w·∂L/∂w| over the unit's weights (first order), L = task loss on the calibration batches
- layers:     block influence 1 − cos(h_in, h_out) (ShortGPT): a layer that barely changes its input is cheap
"""

from __future__ import annotations

from edgelm.core.errors import EdgelmError
from edgelm.models import anatomy
from edgelm.techniques.prune import coupling
from edgelm.techniques.prune.calibrate import InputStats, run_batches


def weight_scores(model, layers, elementwise) -> tuple[dict, dict]:
    """Sum an element-wise score (w², |w·g|) over every weight a unit owns."""
    heads, neurons = {}, {}
    for layer in layers:
        if layer.attention:
            att = layer.attention
            o = model.get_submodule(att.o)
            scores = []
            for g in range(att.groups):
                total = 0.0
                for path, rows in coupling.qkv_rows(att, [g]).items():
                    total += _rows_of(model.get_submodule(path), rows, elementwise).sum().item()
                total += _cols_of(o, coupling.o_columns(att, [g]), elementwise).sum().item()
                scores.append(total)
            heads[layer.index] = scores
        if layer.mlp:
            mlp = layer.mlp
            down = _cols_of(model.get_submodule(mlp.down), list(range(mlp.neurons)), elementwise).sum(0)
            for path in mlp.up:
                rows = _rows_of(model.get_submodule(path), list(range(mlp.neurons * (2 if mlp.fused_gate_up else 1))),
                                elementwise).sum(1)
                down = down + (rows[:mlp.neurons] + rows[mlp.neurons:] if mlp.fused_gate_up else rows)
            neurons[layer.index] = down.tolist()
    return heads, neurons


def _rows_of(module, idx, elementwise):
    """elementwise score of the given output rows, shaped (rows, in)."""
    s = elementwise(module)
    return s[:, idx].T if anatomy.is_conv1d(module) else s[idx]


def _cols_of(module, idx, elementwise):
    """elementwise score of the given input columns, shaped (out, cols)."""
    s = elementwise(module)
    return s[idx].T if anatomy.is_conv1d(module) else s[:, idx]


def activation_scores(model, layers, batches) -> tuple[dict, dict]:
    paths = [l.attention.o for l in layers if l.attention] + [l.mlp.down for l in layers if l.mlp]
    stats = InputStats(model, paths)
    try:
        run_batches(model, batches, "prune: calibration")
    finally:
        stats.remove()
    heads, neurons = {}, {}
    for layer in layers:
        if layer.attention:
            att = layer.attention
            o = model.get_submodule(att.o)
            per_channel = stats.channel_norms(att.o) * _col_norms(o)
            heads[layer.index] = [per_channel[coupling.o_columns(att, [g])].sum().item() for g in range(att.groups)]
        if layer.mlp:
            down = model.get_submodule(layer.mlp.down)
            neurons[layer.index] = (stats.channel_norms(layer.mlp.down) * _col_norms(down)).tolist()
    return heads, neurons


def _col_norms(module):
    w = module.weight.detach().float()
    return w.norm(dim=1) if anatomy.is_conv1d(module) else w.norm(dim=0)


def task_loss(model, batch, task: str):
    import torch

    out = model(**batch.inputs)
    if task == "causal-lm":
        ids = batch.inputs["input_ids"]
        return torch.nn.functional.cross_entropy(out.logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten())
    if task == "sequence-classification":
        labels = batch.labels if batch.labels is not None else out.logits.argmax(-1).detach()
        return torch.nn.functional.cross_entropy(out.logits.float(), labels)
    raise EdgelmError("importance 'taylor' needs a loss: use it with causal-lm or sequence-classification models "
                      "(for sentence embedders use --importance activation)")


def taylor_saliency(model, batches, task: str) -> dict:
    """id(weight) -> Σ_batches |w·g| for every projection weight."""
    import torch

    from edgelm.core.ui import track

    weights = [m.weight for m in model.modules() if anatomy.is_projection(m)]
    saliency = {id(w): torch.zeros_like(w, dtype=torch.float32) for w in weights}
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    for w in weights:
        w.requires_grad_(True)
    try:
        for batch in track(batches, "prune: gradients"):
            model.zero_grad(set_to_none=True)
            task_loss(model, batch, task).backward()
            for w in weights:
                if w.grad is not None:
                    saliency[id(w)] += (w.detach() * w.grad).abs().float()
    finally:
        model.zero_grad(set_to_none=True)
        for p, flag in flags:
            p.requires_grad_(flag)
    return saliency


def layer_influence(model, batches) -> list[float]:
    """Per layer: mean over tokens of 1 − cos(input hidden state, output hidden state)."""
    import torch

    _, stack = anatomy.layer_stack(model)
    sums = [0.0] * len(stack)
    counts = [0] * len(stack)

    def hook(i):
        def fn(module, args, kwargs, output):
            h_in = args[0] if args else kwargs["hidden_states"]
            h_out = output[0] if isinstance(output, tuple) else output
            cos = torch.nn.functional.cosine_similarity(h_in.float(), h_out.float(), dim=-1)
            sums[i] += (1 - cos).sum().item()
            counts[i] += cos.numel()
        return fn

    handles = [block.register_forward_hook(hook(i), with_kwargs=True) for i, block in enumerate(stack)]
    try:
        run_batches(model, batches, "prune: layer influence")
    finally:
        for h in handles:
            h.remove()
    return [s / max(c, 1) for s, c in zip(sums, counts)]
