"""Bottleneck adapters (Houlsby et al. 2019, Pfeiffer et al. 2020): h + W_up·act(W_down·h) on the output of each
block's attention output projection and/or FFN down projection, trained with the base frozen.

No maintained library fits edgelm's transformers 5: AdapterHub's `adapters` 1.3.0 pins transformers ~=4.57.6, and
PEFT 0.21 has no bottleneck tuner (huggingface/peft#2654 / PR #2657, closed unmerged). So the adapters are structure
ops (edgelm.models.structure "adapter"): the bundle records them, a reload replays them, and export traces the
adapted graph — adapters have a non-linearity, so unlike LoRA they cannot be folded into the weights.
"""

from __future__ import annotations

from pathlib import Path

from edgelm.core.errors import EdgelmError

PLACEMENTS = {"both": ("attention", "ffn"), "attention": ("attention",), "ffn": ("ffn",)}


def adapter_ops(model, reduction: int, placement: str, activation: str) -> list[dict]:
    """One structure op per adapted projection: every block's attention output and/or FFN down projection."""
    from edgelm.models.anatomy import find_layers, head_geometry

    hidden = head_geometry(model)[0]
    where = PLACEMENTS[placement]
    paths = [p for layer in find_layers(model) for p in placement_paths(layer, where)]
    if not paths:
        raise EdgelmError(f"{type(model).__name__}: no attention output / FFN down projection found for adapters; "
                          "use --method lora")
    bottleneck = max(1, hidden // reduction)
    return [{"op": "adapter", "path": p, "size": hidden, "bottleneck": bottleneck, "activation": activation}
            for p in paths]


def placement_paths(layer, where: tuple[str, ...]) -> list[str]:
    found = {"attention": layer.attention.o if layer.attention else None, "ffn": layer.mlp.down if layer.mlp else None}
    return [found[w] for w in where if found[w]]


def add_adapters(model, ops: list[dict], heads: list[str], train_norms: bool = True):
    """Insert the adapters and freeze everything but them, the classifier head and (train_norms, as Houlsby et al.
    do) the transformer blocks' normalization layers."""
    from edgelm.models.structure import apply_structure

    norms = block_norm_params(model) if train_norms else set()
    apply_structure(model, ops)
    for name, param in model.named_parameters():
        param.requires_grad_(is_adapter_param(name) or any(name.startswith(h + ".") for h in heads)
                             or param in norms)
    return model


def block_norm_params(model) -> set:
    """The parameters of every LayerNorm / RMSNorm inside the transformer blocks (a few thousand on MiniLM)."""
    from edgelm.models.anatomy import layer_stack

    return {p for m in layer_stack(model)[1].modules() if is_norm(m) for p in m.parameters(recurse=False)}


def is_norm(module) -> bool:
    import torch

    return isinstance(module, torch.nn.LayerNorm) or type(module).__name__.endswith(("RMSNorm", "LayerNorm"))


def is_adapter_param(name: str) -> bool:
    return ".adapter.down." in name or ".adapter.up." in name


def adapter_param_count(ops: list[dict]) -> int:
    """2·h·b + b + h per adapter (down and up projections with biases)."""
    return sum(2 * op["size"] * op["bottleneck"] + op["bottleneck"] + op["size"] for op in ops)


def save_adapters(model, ops: list[dict], target: Path) -> list[Path]:
    """The trained weights (adapters + head) and their ops, loadable onto the same base with load_adapters."""
    import json

    from safetensors.torch import save_file

    target.mkdir(parents=True, exist_ok=True)
    trained = {n: p.detach().contiguous() for n, p in model.named_parameters() if p.requires_grad}
    save_file(trained, target / "adapter_model.safetensors")
    (target / "adapter_config.json").write_text(json.dumps({"method": "adapter", "structure": ops}, indent=2))
    return [target / "adapter_config.json", target / "adapter_model.safetensors"]


def load_adapters(base, folder: Path):
    """`base` with the adapters saved by save_adapters inserted and loaded (the head's weights too)."""
    import json

    from safetensors.torch import load_file

    from edgelm.models.structure import apply_structure

    ops = json.loads((Path(folder) / "adapter_config.json").read_text())["structure"]
    apply_structure(base, ops)
    base.load_state_dict(load_file(Path(folder) / "adapter_model.safetensors"), strict=False)
    return base
