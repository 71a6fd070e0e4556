"""Cut a model to a pruning plan: slice weights, drop layers, and describe the new shapes.

The result is rebuilt from (config, structure ops, state dict) — exactly what a save + reload does. Shapes go
into the plain HF config when it can express them (uniform sizes; head counts only where the config has an
explicit head_dim); everything else becomes per-module structure ops.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field

from edgelm.models import anatomy
from edgelm.techniques.prune import coupling

INTERMEDIATE_FIELDS = ("intermediate_size", "n_inner", "hidden_dim", "ffn_dim")
HEAD_ATTRS = ("num_attention_heads", "num_heads", "n_heads")
KV_HEAD_ATTRS = ("num_key_value_heads",)
WIDTH_ATTRS = ("all_head_size", "split_size")


@dataclass
class Plan:
    keep_groups: dict[int, list[int]] = field(default_factory=dict)  # layer -> kept KV groups
    keep_neurons: dict[int, list[int]] = field(default_factory=dict)  # layer -> kept FFN neurons
    drop_layers: list[int] = field(default_factory=list)


def apply_plan(model, layers: list[anatomy.Layer], plan: Plan):
    """(new model, structure ops) for `plan`. The input model is not touched."""
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    by_index = {layer.index: layer for layer in layers}
    for i, groups in plan.keep_groups.items():
        att = by_index[i].attention
        for path, rows in coupling.qkv_rows(att, groups).items():
            _slice(state, model, path, rows, axis="out")
        _slice(state, model, att.o, coupling.o_columns(att, groups), axis="in")
    for i, keep in plan.keep_neurons.items():
        mlp = by_index[i].mlp
        for path in mlp.up:
            _slice(state, model, path, coupling.up_rows(mlp, keep), axis="out")
        _slice(state, model, mlp.down, keep, axis="in")
    stack_path, stack = anatomy.layer_stack(model)
    state = _renumber(state, stack_path, len(stack), plan.drop_layers)
    config = _new_config(model, layers, plan)
    return _build(model, config, state, layers, plan, stack_path)


def _slice(state, model, path, idx, axis):
    import torch

    module = model.get_submodule(path)
    conv = anatomy.is_conv1d(module)
    dim = {("out", False): 0, ("in", False): 1, ("out", True): 1, ("in", True): 0}[(axis, conv)]
    index = torch.tensor(idx, dtype=torch.long)
    state[f"{path}.weight"] = state[f"{path}.weight"].index_select(dim, index)
    if axis == "out" and f"{path}.bias" in state:
        state[f"{path}.bias"] = state[f"{path}.bias"].index_select(0, index)


def _renumber(state, stack_path, n_layers, dropped):
    if not dropped:
        return state
    kept = [i for i in range(n_layers) if i not in set(dropped)]
    new_index = {old: new for new, old in enumerate(kept)}
    pattern = re.compile(rf"^{re.escape(stack_path)}\.(\d+)\.")
    out = {}
    for key, value in state.items():
        m = pattern.match(key)
        if m is None:
            out[key] = value
        elif int(m.group(1)) in new_index:
            out[f"{stack_path}.{new_index[int(m.group(1))]}.{key[m.end():]}"] = value
    return out


def _new_config(model, layers, plan):
    config = copy.deepcopy(model.config)
    text = anatomy.text_config(config)
    n_layers = text.num_hidden_layers
    if plan.drop_layers:
        kept = [i for i in range(n_layers) if i not in set(plan.drop_layers)]
        text.num_hidden_layers = len(kept)
        if isinstance(getattr(text, "layer_types", None), list) and len(text.layer_types) == n_layers:
            text.layer_types = [text.layer_types[i] for i in kept]
    kept_layers = [l for l in layers if l.index not in set(plan.drop_layers)]
    sizes = {len(plan.keep_neurons.get(l.index, range(l.mlp.neurons))) for l in kept_layers if l.mlp}
    if plan.keep_neurons and len(sizes) == 1:
        size = sizes.pop()
        for name in INTERMEDIATE_FIELDS:
            if name in text.to_dict():
                setattr(text, name, size)
    return config


def _head_config(config, layers, plan):
    """A config that also records uniform head counts, or None when heads are not uniform / not expressible."""
    kept = [l for l in layers if l.attention and l.index not in set(plan.drop_layers)]
    groups = {len(plan.keep_groups.get(l.index, range(l.attention.groups))) for l in kept}
    if len(groups) != 1 or not kept or not plan.keep_groups:
        return None
    att = kept[0].attention
    n_groups = groups.pop()
    candidate = copy.deepcopy(config)
    ctext = anatomy.text_config(candidate)
    ctext.num_attention_heads = n_groups * att.heads_per_group
    if hasattr(ctext, "num_key_value_heads"):
        ctext.num_key_value_heads = n_groups
    ctext.head_dim = att.head_dim  # archs that derive head size from hidden/heads fail the shape check instead
    return candidate


def _build(model, config, state, layers, plan, stack_path):
    """The config with uniform head counts when it builds exactly these shapes, else the plain one plus ops."""
    from edgelm.models.structure import rebuild

    heads_in_config = _head_config(config, layers, plan)
    if heads_in_config is not None and not _config_misfits(model, heads_in_config, state):
        return rebuild(model, heads_in_config, [], state), []
    ops = _shape_ops(model, config, state) + _head_attr_ops(model, config, layers, plan, stack_path)
    return rebuild(model, config, ops, state), ops


def _config_misfits(model, config, state) -> bool:
    """True when `config` cannot express the pruned shapes, including configs the architecture itself rejects
    (BERT-style validation that hidden_size is a multiple of the head count)."""
    try:
        return bool(_shape_ops(model, config, state))
    except (ValueError, AssertionError):
        return True


def _shape_ops(model, config, state) -> list[dict]:
    """linear/conv1d ops for every projection whose pruned weight differs from what `config` builds."""
    import torch

    with torch.device("meta"):
        reference = type(model)(copy.deepcopy(config))
    ref_shapes = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    ops = []
    for name, module in reference.named_modules():
        key = f"{name}.weight"
        if not anatomy.is_projection(module) or key not in state or tuple(state[key].shape) == ref_shapes.get(key):
            continue
        shape = tuple(state[key].shape)
        if anatomy.is_conv1d(module):
            ops.append({"op": "conv1d", "path": name, "in": shape[0], "out": shape[1]})
        else:
            ops.append({"op": "linear", "path": name, "in": shape[1], "out": shape[0], "bias": f"{name}.bias" in state})
    return ops


def _head_attr_ops(model, config, layers, plan, stack_path) -> list[dict]:
    """setattr ops on attention modules whose head count differs from what `config` implies."""
    text = anatomy.text_config(config)
    kept = [l for l in layers if l.index not in set(plan.drop_layers)]
    ops = []
    for new_index, layer in enumerate(kept):
        att = layer.attention
        if att is None or layer.index not in plan.keep_groups:
            continue
        n_groups = len(plan.keep_groups[layer.index])
        heads, kv = n_groups * att.heads_per_group, n_groups
        if heads == text.num_attention_heads:
            continue
        parent = model.get_submodule(att.parent)
        path = att.parent.replace(f"{stack_path}.{layer.index}.", f"{stack_path}.{new_index}.", 1)
        values = {**{a: heads for a in HEAD_ATTRS}, **{a: kv for a in KV_HEAD_ATTRS},
                  **{a: heads * att.head_dim for a in WIDTH_ATTRS}}
        ops += [{"op": "setattr", "path": path, "attr": a, "value": v} for a, v in values.items() if hasattr(parent, a)]
    return ops
