"""Graph optimisation of a dynamo-exported ONNX model: onnxscript's ORT fusions, counted for the manifest.

`onnxscript.rewriter.ort_fusions.optimize_for_ort` matches the patterns torch.onnx's dynamo exporter emits
(RMSNorm -> SimplifiedLayerNormalization, SkipLayerNorm, Gelu/BiasGelu, rotary embedding, SDPA -> MHA / GQA)
for any architecture; onnxruntime's `transformers.optimizer` needs a model-type table and targets the older
TorchScript graphs, so it is not used here. The result is checked by parity like any other artifact and stays
plain ONNX + com.microsoft contrib ops, which onnxruntime.quantization handles (int8 MatMul, MatMulNBits).
"""

from __future__ import annotations

import time
from pathlib import Path


def optimize_onnx(path: Path, bundle=None) -> dict:
    """Rewrite `path` in place (same external-data layout); returns {"fusions": {name: count}, ...}."""
    import onnx_ir as ir
    from onnxscript.rewriter.ort_fusions import optimize_for_ort

    path = Path(path)
    started = time.time()
    data_file = path.with_name(path.name + ".data")
    external = data_file.exists()
    model = ir.load(str(path))
    nodes_before = _count_nodes(model)
    model, counts = optimize_for_ort(model)
    fusions = {name: int(n) for name, n in sorted(counts.items()) if n}
    tmp = path.with_name(".optimized." + path.name)
    ir.save(model, str(tmp), external_data=(tmp.name + ".data") if external else None)
    tmp.replace(path)
    if external:
        # the graph refers to its data file by name: keep that name equal to model.onnx.data
        Path(str(tmp) + ".data").replace(data_file)
        _rename_external_data(path, tmp.name + ".data", data_file.name)
    return {"optimizer": "onnxscript.rewriter.ort_fusions", "fusions": fusions, "nodes_before": nodes_before,
            "nodes_after": _count_nodes(model), "seconds": round(time.time() - started, 2)}


def _count_nodes(model) -> int:
    return sum(1 for _ in model.graph.all_nodes()) if hasattr(model.graph, "all_nodes") else len(model.graph)


def _rename_external_data(path: Path, old: str, new: str) -> None:
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    for tensor in proto.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location" and entry.value == old:
                entry.value = new
    onnx.save(proto, str(path))
