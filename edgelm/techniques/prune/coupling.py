"""Find the transformer layer stack, its attention and MLP projections, and which slices belong together.

Discovery is generic: the layer stack is the ModuleList with `num_hidden_layers` same-class entries; inside a
layer, projections are recognised by their (in, out) shapes against the config's hidden size, head counts and
head_dim — no per-architecture tables. The one layout shapes cannot reveal is a fused QKV that interleaves
q/k/v per head (GPT-NeoX `query_key_value`); that is the short name list below.

Coupling: a pruning *unit* of attention is a KV group (one key/value head plus the query heads that share it,
so GQA stays consistent; for plain multi-head attention a group is one head). An MLP unit is one neuron across
gate/up rows and the down-projection column.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from edgelm.core.errors import EdgelmError

INTERLEAVED_QKV = ("query_key_value",)  # per-head [q|k|v] blocks (GPT-NeoX, Falcon-style)


def is_conv1d(module: nn.Module) -> bool:
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf")  # GPT-2's transposed Linear


def is_projection(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or is_conv1d(module)


def dims(module: nn.Module) -> tuple[int, int]:
    """(in_features, out_features) of a Linear or GPT-2 Conv1D."""
    if is_conv1d(module):
        return module.weight.shape[0], module.weight.shape[1]
    return module.in_features, module.out_features


def text_config(model):
    cfg = model.config
    return cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg


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


def layer_stack(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """(path, ModuleList) of the transformer blocks."""
    n_layers = getattr(text_config(model), "num_hidden_layers", None)
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) > 0 and (n_layers is None or len(module) == n_layers):
            if len({type(m) for m in module}) == 1 and any(is_projection(m) for m in module[0].modules()):
                return name, module
    raise EdgelmError(f"{type(model).__name__}: no transformer layer stack found (a ModuleList of "
                      f"{n_layers} identical blocks); this architecture is not supported for structural compression")


def head_geometry(model) -> tuple[int, int, int, int]:
    """(hidden, heads, kv_heads, head_dim) from the config."""
    cfg = text_config(model)
    hidden = cfg.hidden_size
    heads = cfg.num_attention_heads
    kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
    head_dim = getattr(cfg, "head_dim", None) or hidden // heads
    return hidden, heads, kv_heads, head_dim


def discover(model: nn.Module) -> list[Layer]:
    stack_path, stack = layer_stack(model)
    geometry = head_geometry(model)
    return [_discover_layer(f"{stack_path}.{i}", i, block, geometry) for i, block in enumerate(stack)]


def _discover_layer(path: str, index: int, block: nn.Module, geometry) -> Layer:
    hidden, heads, kv_heads, head_dim = geometry
    projections = [(n, m) for n, m in block.named_modules() if is_projection(m)]
    q_width, kv_width = heads * head_dim, kv_heads * head_dim
    fused_width = q_width + 2 * kv_width
    attention = _find_attention(path, projections, hidden, q_width, kv_width, fused_width, heads, kv_heads, head_dim)
    used = set(attention.qkv + [attention.o]) if attention else set()
    rest = [(f"{path}.{n}", m) for n, m in projections if f"{path}.{n}" not in used]
    return Layer(index, path, attention, _find_mlp(rest, hidden), [f"{path}.{n}" for n, _ in projections])


def _find_attention(path, projections, hidden, q_width, kv_width, fused_width, heads, kv_heads, head_dim):
    full = [(f"{path}.{n}", m) for n, m in projections]
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


# --- index maps: which output rows / input columns a kept unit owns ----------------------------------------
def qkv_rows(att: Attention, keep_groups: list[int]) -> dict[str, list[int]]:
    """Row indices to keep in each q/k/v projection (or the fused one) for the kept KV groups."""
    hd, per = att.head_dim, att.heads_per_group
    q_heads = [g * per + j for g in keep_groups for j in range(per)]
    q_rows = [h * hd + d for h in q_heads for d in range(hd)]
    kv_rows = [g * hd + d for g in keep_groups for d in range(hd)]
    if att.fused is None:
        return {att.qkv[0]: q_rows, att.qkv[1]: kv_rows, att.qkv[2]: kv_rows}
    if att.fused == "interleaved":  # heads == kv_heads here: block h = [q_h | k_h | v_h]
        return {att.qkv[0]: [h * 3 * hd + d for h in keep_groups for d in range(3 * hd)]}
    q_width, kv_width = att.heads * hd, att.kv_heads * hd
    return {att.qkv[0]: q_rows + [q_width + r for r in kv_rows] + [q_width + kv_width + r for r in kv_rows]}


def o_columns(att: Attention, keep_groups: list[int]) -> list[int]:
    hd, per = att.head_dim, att.heads_per_group
    return [(g * per + j) * hd + d for g in keep_groups for j in range(per) for d in range(hd)]


def up_rows(mlp: Mlp, keep: list[int]) -> list[int]:
    return keep + [mlp.neurons + j for j in keep] if mlp.fused_gate_up else list(keep)
