"""LSTM nodes in an exported graph: their weight inputs as plain initializers.

torch's exporter reorders an LSTM's gates (torch: i, f, c, o; ONNX: i, o, f, c) with Split / Concat / Unsqueeze of
the weights, which onnxscript's optimizer leaves in the graph: every run would recompute them, and onnxruntime's
dynamic quantizer takes an LSTM (DynamicQuantizeLSTM) only when W and R are initializers. `fold_lstm_file` computes
those constant inputs once (export), `fold_lstm_weights` does it on a loaded model (quantize).
"""

from __future__ import annotations

from pathlib import Path

import onnx


def fold_lstm_file(path: Path) -> int:
    """Fold the LSTM weight inputs of the model at `path` in place; returns the LSTMs folded (0: file untouched)."""
    from edgelm.export.onnx_io import save_model

    head = onnx.load(str(path), load_external_data=False)
    if not any(n.op_type == "LSTM" for n in head.graph.node):
        return 0
    model = onnx.load(str(path))
    folded = fold_lstm_weights(model)
    if folded:
        save_model(model, Path(path), external=Path(str(path) + ".data").is_file())
    return folded


def fold_lstm_weights(model: onnx.ModelProto) -> int:
    """The exporter reorders LSTM gates with Slice/Concat/Unsqueeze of the weights, which its optimizer leaves
    unfolded above a size limit; onnxruntime quantizes an LSTM (DynamicQuantizeLSTM) only when W and R are
    initializers, so compute those constant inputs once and drop the ops that made them. Returns LSTMs folded."""
    lstms = [n for n in model.graph.node if n.op_type == "LSTM"]
    wanted = [name for n in lstms for name in n.input[1:4] if name and not is_initializer(model, name)]
    if not wanted:
        return 0
    from onnx import numpy_helper
    from onnx.reference import ReferenceEvaluator

    nodes = producers(model, wanted)
    sub = onnx.helper.make_graph(nodes, "fold", [], [onnx.helper.make_tensor_value_info(w, 0, None) for w in wanted],
                                 initializer=list(model.graph.initializer))
    values = ReferenceEvaluator(onnx.helper.make_model(sub, opset_imports=model.opset_import)).run(None, {})
    for node in [n for n in model.graph.node if set(n.output) & set(wanted)]:
        model.graph.node.remove(node)
    model.graph.initializer.extend(numpy_helper.from_array(v, w) for w, v in zip(wanted, values))
    drop_dead_nodes(model)
    return len(lstms)


def is_initializer(model: onnx.ModelProto, name: str) -> bool:
    return any(i.name == name for i in model.graph.initializer)


def producers(model: onnx.ModelProto, names: list[str]) -> list:
    """The nodes computing `names`, in graph order (they must depend on initializers only)."""
    made = {o: n for n in model.graph.node for o in n.output}
    needed, todo = set(), list(names)
    while todo:
        node = made.get(todo.pop())
        if node is not None and id(node) not in needed:
            needed.add(id(node))
            todo.extend(node.input)
    return [n for n in model.graph.node if id(n) in needed]


def drop_dead_nodes(model: onnx.ModelProto) -> None:
    while True:
        used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
        dead = [n for n in model.graph.node if not any(o in used for o in n.output)]
        if not dead:
            break
        for n in dead:
            model.graph.node.remove(n)
    used = {i for n in model.graph.node for i in n.input}
    for init in [i for i in model.graph.initializer if i.name not in used]:
        model.graph.initializer.remove(init)
