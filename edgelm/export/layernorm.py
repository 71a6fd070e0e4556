"""LayerNorm as mean-centring + onnxruntime's RMS norm: the same function, about 6x faster on onnxruntime's CPU.

onnxruntime's LayerNormalization / SkipLayerNormalization CPU kernels accumulate the statistics in double, one
row at a time: measured 43 us per call on a [1, 28, 384] MiniLM activation (1 thread) against 7 us for
Add + ReduceMean + Sub + SimplifiedLayerNormalization (RMS norm) + Add, which computes the same thing: the RMS of a
centred row is its standard deviation. An encoder has two per layer, so this is a fifth of an int8 MiniLM call.
`decompose_file` rewrites a saved encoder and keeps the rewrite only when onnxruntime gives the same outputs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

MS = "com.microsoft"


def decompose_layer_norms(model: onnx.ModelProto) -> int:
    """Rewrite every last-axis LayerNormalization / SkipLayerNormalization whose statistics outputs are unused;
    returns how many."""
    used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 18)
    axes = "layernorm_last_axis"
    done = 0
    for node in list(model.graph.node):
        parts = _parts(node, used)
        if parts is None:
            continue
        if not done:
            model.graph.initializer.append(numpy_helper.from_array(np.array([-1], dtype=np.int64), axes))
        at = list(model.graph.node).index(node)
        model.graph.node.remove(node)
        for i, new in enumerate(_composite(node.name, *parts, axes, opset)):
            model.graph.node.insert(at + i, new)
        done += 1
    return done


def _parts(node, used: set[str]):
    """(summands, gamma, beta, epsilon, output, sum output) of a rewritable norm, else None."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    outs = list(node.output) + [""] * 4
    if node.op_type == "LayerNormalization" and node.domain in ("", "ai.onnx"):
        if attrs.get("axis", -1) != -1 or any(o in used for o in outs[1:3] if o):
            return None
        ins = list(node.input) + [""] * 3
        return [ins[0]], ins[1], ins[2], attrs.get("epsilon", 1e-5), outs[0], ""
    if node.op_type == "SkipLayerNormalization" and node.domain == MS:
        if any(o in used for o in outs[1:3] if o):
            return None
        ins = list(node.input) + [""] * 5
        return [ins[0], ins[1], *([ins[4]] if ins[4] else [])], ins[2], ins[3], attrs.get("epsilon", 1e-12), outs[0], \
            outs[3] if outs[3] in used else ""
    return None


def _composite(name, summands, gamma, beta, epsilon, output, sum_output, axes, opset) -> list:
    nodes, x = [], summands[0]
    for i, other in enumerate(summands[1:]):
        last = i == len(summands) - 2
        out = (sum_output or f"{name}_sum") if last else f"{name}_sum{i}"
        nodes.append(helper.make_node("Add", [x, other], [out], name=f"{name}_add{i}"))
        x = out
    mean = (helper.make_node("ReduceMean", [x, axes], [f"{name}_mean"], name=f"{name}_mean", keepdims=1) if opset >= 18
            else helper.make_node("ReduceMean", [x], [f"{name}_mean"], name=f"{name}_mean", keepdims=1, axes=[-1]))
    normed = f"{name}_rms" if beta else output
    nodes += [mean,
              helper.make_node("Sub", [x, f"{name}_mean"], [f"{name}_centred"], name=f"{name}_centre"),
              helper.make_node("SimplifiedLayerNormalization", [f"{name}_centred", gamma], [normed], name=f"{name}_rms",
                               axis=-1, epsilon=float(epsilon))]
    if beta:
        nodes.append(helper.make_node("Add", [normed, beta], [output], name=f"{name}_beta"))
    return nodes


def decompose_file(path: Path, atol: float = 1e-4) -> dict:
    """Rewrite the encoder at `path` in place when onnxruntime gives the same outputs (two rows, one padded) as the
    original; returns {"layer_norms": n, ...} or the reason nothing was rewritten."""
    from edgelm.export.checked import rewrite_checked

    if any(i.name.startswith("past_key_values") for i in onnx.load(str(path), load_external_data=False).graph.input):
        return {"layer_norms": 0, "reason": "decoder graph (left as exported)"}
    return rewrite_checked(path, lambda model: {"layer_norms": decompose_layer_norms(model)}, atol,
                           "layer_norms", "max_abs_diff", "no LayerNormalization to rewrite")
