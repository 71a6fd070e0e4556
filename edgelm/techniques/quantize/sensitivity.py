"""Sensitivity analysis: which layers quantization hurts most.

Quantizable nodes are grouped by transformer layer (from the exporter's module-path metadata). For each group:
- `sqnr_db`: output SQNR when ONLY that group is quantized (the error the layer introduces on its own);
- `accuracy_kept_float`: with labels, accuracy when everything EXCEPT that group is quantized.
`auto_exclude` keeps the most sensitive groups float, one at a time, until the accuracy gate holds.
Both are handed the quantizer (`quantize(dst, options)`: write the quantized source graph at dst), so this module
knows nothing of calibration data or of the stage that calls it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

import numpy as np
import onnx

from edgelm.verify import fidelity
from edgelm.techniques.quantize.onnx_quant import QuantOptions
from edgelm.core.ui import track

GENERIC_SCOPES = {"model", "encoder", "decoder", "base_model", "transformer", "bert", "roberta", "distilbert", "electra",
                  "gpt_neox", "embeddings"}
Quantizer = Callable[[Path, QuantOptions], dict]
LAYER_PATTERN = re.compile(r"\.(?:layers?|h|blocks?|transformer\.h)\.(\d+)(?:\.|$)")


def quantizable_groups(path: Path, options: QuantOptions) -> dict[str, list[str]]:
    """{layer key: node names} for the weight ops this method would quantize."""
    model = onnx.load(str(path), load_external_data=False)
    weights = {t.name for t in model.graph.initializer}
    ops = {"MatMul", "Gemm"} | ({"Gather"} if options.quantize_embedding and options.method in ("int8-dynamic", "int4") else set())
    # an optimised graph's tied LM head is FusedMatMul over the embedding table, which int4 unfuses and quantizes
    tied_heads = {n.name for n in model.graph.node if options.method == "int4" and n.op_type == "FusedMatMul"
                  and any(g.op_type == "Gather" and g.input[0] == n.input[1] for g in model.graph.node)}
    groups: dict[str, list[str]] = {}
    for node in model.graph.node:
        if node.op_type == "Attention" and options.method.startswith("int8"):  # its QKV MatMul after the split
            groups.setdefault(layer_key(node), []).append(node.name)
            continue
        if node.op_type not in ops and node.name not in tied_heads:
            continue
        weight = node.input[0] if node.op_type == "Gather" else node.input[1] if len(node.input) > 1 else ""
        if weight not in weights:
            continue
        groups.setdefault(layer_key(node), []).append(node.name)
    return groups


def layer_key(node) -> str:
    scope = next((p.value for p in node.metadata_props if p.key == "namespace"), "")
    module = scope.split("/")[-2].split(":")[0].strip() if scope.count("/") >= 1 else ""
    match = LAYER_PATTERN.search("." + module + ".")
    if match:
        return f"layer.{int(match.group(1)):02d}"
    if module:
        parts = [p for p in module.split(".") if p not in GENERIC_SCOPES]
        return parts[0] if parts else module
    return node.name


def layer_sensitivity(source: Path, tokenizer, task: str, options: QuantOptions, texts: list[str], labelled,
                      quantize: Quantizer, workdir: Path) -> tuple[list[dict], dict[str, list[str]]]:
    workdir.mkdir(parents=True, exist_ok=True)
    groups = quantizable_groups(source, options)
    every = [n for names in groups.values() for n in names]
    reference = fidelity.run_graph(source, tokenizer, texts)
    float_acc = accuracy(source, tokenizer, labelled) if labelled is not None else None
    rows = []
    for key, names in track(list(groups.items()), "sensitivity per layer"):
        only = workdir / "only.onnx"
        quantize(only, _with_exclude(options, sorted(set(every) - set(names)) + options.exclude))
        row = {"layer": key, "nodes": names, "sqnr_db": fidelity.sqnr_db(reference, fidelity.run_graph(only, tokenizer, texts))}
        if labelled is not None:
            kept = workdir / "kept.onnx"
            quantize(kept, _with_exclude(options, names + options.exclude))
            row["accuracy_kept_float"] = accuracy(kept, tokenizer, labelled)
            row["float_accuracy"] = float_acc
        rows.append(row)
    rows.sort(key=_most_sensitive_first)
    return rows, groups


def _most_sensitive_first(row: dict):
    return (-(row.get("accuracy_kept_float") or 0.0), row["sqnr_db"])


def auto_exclude(source: Path, tokenizer, options: QuantOptions, table: list[dict], groups: dict[str, list[str]],
                 labelled, quantize: Quantizer, max_drop_pt: float, workdir: Path) -> tuple[list[str], dict]:
    """Keep float the most sensitive layers (table order), one more at a time, until the drop is within the gate."""
    workdir.mkdir(parents=True, exist_ok=True)
    float_acc = accuracy(source, tokenizer, labelled)
    exclude, kept, steps = list(options.exclude), [], []
    for row in [None] + table:
        if row is not None:
            kept.append(row["layer"])
            exclude += groups[row["layer"]]
        candidate = workdir / "candidate.onnx"
        quantize(candidate, _with_exclude(options, exclude))
        acc = accuracy(candidate, tokenizer, labelled)
        drop = round(float_acc - acc, 3)
        steps.append({"kept_float": list(kept), "accuracy": acc, "accuracy_drop_pt": drop})
        if drop <= max_drop_pt:
            return exclude, {"met": True, "float_accuracy": float_acc, "kept_float": kept, "steps": steps, "gate_pt": max_drop_pt}
    return exclude, {"met": False, "float_accuracy": float_acc, "kept_float": kept, "steps": steps, "gate_pt": max_drop_pt}


def accuracy(path: Path, tokenizer, labelled) -> float:
    """Accuracy on the labelled set, in percentage points."""
    return round(100 * float((predictions(path, tokenizer, labelled) == np.asarray(labelled.labels)).mean()), 3)


def predictions(path: Path, tokenizer, labelled) -> np.ndarray:
    outputs = fidelity.run_graph(path, tokenizer, labelled.texts, batch_size=16, max_length=128)
    return np.concatenate([v.argmax(-1) for v in outputs.values])


def _with_exclude(options: QuantOptions, exclude: list[str]) -> QuantOptions:
    from dataclasses import replace

    return replace(options, exclude=sorted(set(exclude)))
