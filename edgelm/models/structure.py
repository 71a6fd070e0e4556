"""Record and replay shape changes (pruning, low-rank) that a plain HF config cannot describe.

A structure is a list of ops applied, in order, to a freshly built model before its safetensors weights
load: {"op": "linear", "path", "in", "out", "bias"}, {"op": "conv1d", "path", "in", "out"} (GPT-2's transposed
Linear), {"op": "lowrank", "path", "in", "rank", "out", "bias"},
{"op": "setattr", "path", "attr", "value"}, {"op": "drop", "path"} (a ModuleList index to remove),
{"op": "adapter", "path", "size", "bottleneck", "activation"} (a bottleneck adapter on a projection's output).
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from edgelm.core.errors import EdgelmError
from edgelm.models.anatomy import parent_module


class LowRankLinear(nn.Sequential):
    """W ≈ P·Q as two Linear layers: in -> rank (no bias) -> out (original bias)."""

    def __init__(self, in_features: int, rank: int, out_features: int, bias: bool = True):
        super().__init__(nn.Linear(in_features, rank, bias=False), nn.Linear(rank, out_features, bias=bias))
        self.in_features, self.out_features, self.rank = in_features, out_features, rank


class BottleneckAdapter(nn.Module):
    """Houlsby/Pfeiffer adapter: h + up(act(down(h))); up starts at zero, so a new adapter is the identity."""

    def __init__(self, size: int, bottleneck: int, activation: str = "relu"):
        from transformers.activations import ACT2FN

        super().__init__()
        self.down, self.up, self.act = nn.Linear(size, bottleneck), nn.Linear(bottleneck, size), ACT2FN[activation]
        self.activation = activation
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, hidden):
        return hidden + self.up(self.act(self.down(hidden)))


class Adapted(nn.Module):
    """A projection followed by a bottleneck adapter on its output (before the block's dropout and residual)."""

    def __init__(self, base: nn.Module, adapter: BottleneckAdapter):
        super().__init__()
        self.base, self.adapter = base, adapter

    def forward(self, hidden):
        return self.adapter(self.base(hidden))


def apply_structure(model: nn.Module, ops: list[dict]) -> nn.Module:
    for op in ops:
        kind = op["op"]
        if kind == "linear":
            replace_module(model, op["path"], nn.Linear(op["in"], op["out"], bias=op.get("bias", True)))
        elif kind == "conv1d":
            from transformers.pytorch_utils import Conv1D

            replace_module(model, op["path"], Conv1D(op["out"], op["in"]))
        elif kind == "lowrank":
            replace_module(model, op["path"], LowRankLinear(op["in"], op["rank"], op["out"], bias=op.get("bias", True)))
        elif kind == "adapter":
            adapter = BottleneckAdapter(op["size"], op["bottleneck"], op.get("activation", "relu"))
            replace_module(model, op["path"], Adapted(model.get_submodule(op["path"]), adapter))
        elif kind == "setattr":
            setattr(model.get_submodule(op["path"]) if op["path"] else model, op["attr"], op["value"])
        elif kind == "drop":
            parent, index = parent_module(model, op["path"])
            del parent[int(index)]
        else:
            raise EdgelmError(f"structure op {kind!r} is unknown; the bundle was written by a newer edgelm?")
    return model


def replace_module(model: nn.Module, path: str, new: nn.Module) -> None:
    parent, name = parent_module(model, path)
    setattr(parent, name, new)


def load_restructured(model_cls, folder: Path, ops: list[dict], trust_remote_code: bool = False):
    """Build the model from its config, replay the ops, then load the safetensors state dict strictly."""
    from safetensors.torch import load_file
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
    # built on CPU, not meta: non-persistent buffers (rotary frequencies, position ids) must be real
    model = model_cls.from_config(config, trust_remote_code=trust_remote_code)
    state = {}
    for f in sorted(Path(folder).glob("*.safetensors")):
        state.update(load_file(f))
    return _restructure_and_load(model, ops, state, str(folder))


def rebuild(model: nn.Module, config, ops: list[dict], state: dict) -> nn.Module:
    """A fresh model of `model`'s class from `config`, with the ops replayed and `state` loaded — exactly what a
    save + reload of the result gives, so the in-memory model and the reloaded one cannot drift apart."""
    fresh = type(model)(config)
    return _restructure_and_load(fresh, ops, state, type(model).__name__)


def _restructure_and_load(model: nn.Module, ops: list[dict], state: dict, where: str) -> nn.Module:
    apply_structure(model, ops)
    state = _undo_checkpoint_renames(model, state)
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = set(getattr(model, "_tied_weights_keys", None) or [])
    missing = [k for k in missing if k not in tied and not k.endswith("lm_head.weight")]
    if missing or unexpected:
        raise EdgelmError(f"{where}: weights do not match the recorded structure "
                          f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    return model.float().eval()


def _undo_checkpoint_renames(model: nn.Module, state: dict) -> dict:
    """save_pretrained writes some keys under legacy names (GPT-NeoX lm_head -> embed_out); from_pretrained renames
    them back. Reading the safetensors ourselves, apply transformers' own plain renamings to keys the model lacks."""
    import re

    expected = set(model.state_dict())
    if all(k in expected for k in state):
        return state
    try:
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import WeightRenaming

        renames = [(src, dst) for t in get_model_conversion_mapping(model) if type(t) is WeightRenaming
                   for src, dst in zip(t.source_patterns, t.target_patterns)]
    except ImportError:  # older transformers save under the model's own names
        return state
    fixed = {}
    for key, tensor in state.items():
        if key not in expected:
            for src, dst in renames:
                if key not in expected and re.search(src, key):
                    key = re.sub(src, dst, key)
        fixed[key] = tensor
    return fixed
