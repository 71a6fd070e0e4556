"""Record and replay shape changes (pruning, low-rank) that a plain HF config cannot describe.

A structure is a list of ops applied, in order, to a freshly built model before its safetensors weights
load: {"op": "linear", "path", "in", "out", "bias"}, {"op": "lowrank", "path", "in", "rank", "out", "bias"},
{"op": "setattr", "path", "attr", "value"}, {"op": "drop", "path"} (a ModuleList index to remove).
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from edgelm.errors import EdgelmError


class LowRankLinear(nn.Sequential):
    """W ≈ P·Q as two Linear layers: in -> rank (no bias) -> out (original bias)."""

    def __init__(self, in_features: int, rank: int, out_features: int, bias: bool = True):
        super().__init__(nn.Linear(in_features, rank, bias=False), nn.Linear(rank, out_features, bias=bias))
        self.in_features, self.out_features, self.rank = in_features, out_features, rank


def apply_structure(model: nn.Module, ops: list[dict]) -> nn.Module:
    for op in ops:
        kind = op["op"]
        if kind == "linear":
            _replace(model, op["path"], nn.Linear(op["in"], op["out"], bias=op.get("bias", True)))
        elif kind == "lowrank":
            _replace(model, op["path"], LowRankLinear(op["in"], op["rank"], op["out"], bias=op.get("bias", True)))
        elif kind == "setattr":
            setattr(model.get_submodule(op["path"]) if op["path"] else model, op["attr"], op["value"])
        elif kind == "drop":
            parent_path, _, index = op["path"].rpartition(".")
            parent = model.get_submodule(parent_path)
            del parent[int(index)]
        else:
            raise EdgelmError(f"structure op {kind!r} is unknown; the bundle was written by a newer edgelm?")
    return model


def _replace(model: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, name, new)


def load_restructured(model_cls, folder: Path, ops: list[dict], trust_remote_code: bool = False):
    """Build the model from its config, replay the ops, then load the safetensors state dict strictly."""
    from safetensors.torch import load_file
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
    # built on CPU, not meta: non-persistent buffers (rotary frequencies, position ids) must be real
    model = model_cls.from_config(config, trust_remote_code=trust_remote_code)
    apply_structure(model, ops)
    state = {}
    for f in sorted(Path(folder).glob("*.safetensors")):
        state.update(load_file(f))
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = set(getattr(model, "_tied_weights_keys", None) or [])
    missing = [k for k in missing if k not in tied and not k.endswith("lm_head.weight")]
    if missing or unexpected:
        raise EdgelmError(f"{folder}: weights do not match the recorded structure "
                          f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    return model.float().eval()
