"""Where things are inside a transformer: the block stack, a block's attention and MLP projections, head counts.

Discovery is generic: the block stack is the first ModuleList (in module order, so the backbone before any
heads) with `num_hidden_layers` same-class entries holding projections; inside a block, projections are
recognised by their (in, out) shapes against the config's hidden size, head counts and head_dim — no
per-architecture tables. The one layout shapes cannot reveal is a fused QKV that interleaves q/k/v per head
(GPT-NeoX `query_key_value`); that is the short name list below. A projection is an nn.Linear or GPT-2's
Conv1D, which stores its weight transposed as (in, out).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from edgelm.core.errors import EdgelmError

INTERLEAVED_QKV = ("query_key_value",)  # per-head [q|k|v] blocks (GPT-NeoX, Falcon-style)
UNSUPPORTED = "this architecture is not supported for structural compression"


# --- projections: nn.Linear or GPT-2's transposed Conv1D --------------------------------------------------------
def is_conv1d(module: nn.Module) -> bool:
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf")  # GPT-2's transposed Linear


def is_projection(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or is_conv1d(module)


def dims(module: nn.Module) -> tuple[int, int]:
    """(in_features, out_features) of a Linear or GPT-2 Conv1D."""
    if is_conv1d(module):
        return module.weight.shape[0], module.weight.shape[1]
    return module.in_features, module.out_features


def weight_out_in(module: nn.Module):
    """The weight of a Linear or GPT-2 Conv1D as an (out, in) view (writes go to the module)."""
    return module.weight.T if is_conv1d(module) else module.weight


def projections(module: nn.Module, prefix: str) -> list[tuple[str, nn.Module]]:
    """(full path, module) of every projection inside `module`, in module order."""
    return [(f"{prefix}.{name}", m) for name, m in module.named_modules() if is_projection(m)]


def parent_module(model: nn.Module, path: str) -> tuple[nn.Module, str]:
    """(the module holding `path`, the last name in `path`)."""
    parent_path, _, name = path.rpartition(".")
    return (model.get_submodule(parent_path) if parent_path else model), name


# --- config: sizes and head counts ------------------------------------------------------------------------------
def text_config(config):
    """The language model's part of a config (multimodal configs nest it)."""
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def head_geometry(model) -> tuple[int, int, int, int]:
    """(hidden, heads, kv_heads, head_dim) from the config."""
    cfg = text_config(model.config)
    hidden = cfg.hidden_size
    heads = cfg.num_attention_heads
    kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
    head_dim = getattr(cfg, "head_dim", None) or hidden // heads
    return hidden, heads, kv_heads, head_dim


# --- the block stack ------------------------------------------------------------------------------------------
def layer_stack(model: nn.Module, remedy: str = UNSUPPORTED) -> tuple[str, nn.ModuleList]:
    """(path, ModuleList) of the transformer blocks; `remedy` ends the error when there is none."""
    n_layers = getattr(text_config(model.config), "num_hidden_layers", None)
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and _is_stack(module, n_layers):
            return name, module
    raise EdgelmError(f"{type(model).__name__}: no transformer layer stack found (a ModuleList of "
                      f"{n_layers} identical blocks); {remedy}")


def _is_stack(modules: nn.ModuleList, n_layers: int | None) -> bool:
    if len(modules) == 0 or (n_layers is not None and len(modules) != n_layers):
        return False
    return len({type(m) for m in modules}) == 1 and any(is_projection(m) for m in modules[0].modules())


def count_layers(model: nn.Module) -> int:
    return len(layer_stack(model)[1])


def block_projections(model: nn.Module, remedy: str = UNSUPPORTED) -> dict[str, tuple[int, int]]:
    """{full path: (in, out)} of every projection inside the transformer blocks, block by block."""
    path, stack = layer_stack(model, remedy)
    return {p: dims(m) for p, m in projections(stack, path)}


# --- a block's attention and MLP -------------------------------------------------------------------------------
@dataclass
class Attention:
    qkv: list[str]  # q, k, v paths, or one fused path
    o: str
    parent: str  # module holding head-count attributes
    heads: int
    kv_heads: int
    head_dim: int
    fused: str | None = None  # None | "concat" ([q|k|v] blocks) | "interleaved" (per head)

    @property
    def groups(self) -> int:
        return self.kv_heads

    @property
    def heads_per_group(self) -> int:
        return self.heads // self.kv_heads


@dataclass
class Mlp:
    up: list[str]  # up and gate paths (rows = neurons)
    down: str  # columns = neurons
    neurons: int
    fused_gate_up: bool = False  # one Linear whose rows are [gate | up]


@dataclass
class Layer:
    index: int
    path: str
    attention: Attention | None
    mlp: Mlp | None
    projections: list[str] = field(default_factory=list)


def find_layers(model: nn.Module) -> list[Layer]:
    """Every block of the stack with its attention and MLP projections (None where a block has none)."""
    stack_path, stack = layer_stack(model)
    geometry = head_geometry(model)
    return [_find_layer(f"{stack_path}.{i}", i, block, geometry) for i, block in enumerate(stack)]


def _find_layer(path: str, index: int, block: nn.Module, geometry) -> Layer:
    hidden, heads, kv_heads, head_dim = geometry
    full = projections(block, path)
    q_width, kv_width = heads * head_dim, kv_heads * head_dim
    fused_width = q_width + 2 * kv_width
    attention = _find_attention(full, hidden, q_width, kv_width, fused_width, heads, kv_heads, head_dim)
    used = set(attention.qkv + [attention.o]) if attention else set()
    rest = [(p, m) for p, m in full if p not in used]
    return Layer(index, path, attention, _find_mlp(rest, hidden), [p for p, _ in full])


def _find_attention(full, hidden, q_width, kv_width, fused_width, heads, kv_heads, head_dim):
    q = [p for p, m in full if dims(m) == (hidden, q_width)]
    kv = [p for p, m in full if dims(m) == (hidden, kv_width)] if kv_width != q_width else []
    qkv, layout = (q[:3] if kv_width == q_width else q[:1] + kv[:2]), None
    if len(qkv) != 3:  # no separate q/k/v: look for one fused projection
        fused = [p for p, m in full if dims(m) == (hidden, fused_width)]
        if not fused:
            return None
        qkv = fused[:1]
        layout = "interleaved" if fused[0].rsplit(".", 1)[-1] in INTERLEAVED_QKV else "concat"
    parent = qkv[0].rpartition(".")[0]
    start = max(i for i, (p, _) in enumerate(full) if p in qkv)
    # the output projection follows q/k/v (phi3 registers o_proj first, so fall back to any other one)
    o_candidates = [p for p, m in full[start + 1:] + full[:start] if dims(m) == (q_width, hidden) and p not in qkv]
    if not o_candidates:
        return None
    return Attention(qkv, o_candidates[0], parent, heads, kv_heads, head_dim, layout)


def _find_mlp(rest, hidden) -> Mlp | None:
    downs = [(p, m) for p, m in rest if dims(m)[1] == hidden and dims(m)[0] != hidden]
    if not downs:
        return None
    down, down_module = downs[-1]
    neurons = dims(down_module)[0]
    up = [p for p, m in rest if dims(m) == (hidden, neurons)]
    fused = [p for p, m in rest if dims(m) == (hidden, 2 * neurons)]
    if fused and not up:
        return Mlp(fused[:1], down, neurons, fused_gate_up=True)
    return Mlp(up, down, neurons) if up else None
