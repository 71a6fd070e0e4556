"""Plain export folders for bench tests, made without the export stage: torch.onnx.export(dynamo=True) of the
task module, .ort by onnxruntime's converter, .pte by ExecuTorch with XNNPACK — the layout the export stage
writes (model.onnx / model.ort / model.pte, manifest.json, edgelm.json with model_dir)."""

from __future__ import annotations

import json
from pathlib import Path


def make_export(model_dir: Path, out: Path, formats=("onnx",), task: str | None = None, seq_len: int = 16) -> Path:
    import torch

    from edgelm.loading import load_model
    from edgelm.tasks import model_input_names, output_name, task_module

    bundle = load_model(str(model_dir), task=task)
    module = task_module(bundle)
    names = model_input_names(bundle)
    example = tuple(torch.ones(2, seq_len, dtype=torch.long) for _ in names)
    batch, seq = torch.export.Dim("batch", max=64), torch.export.Dim("seq", min=2, max=128)
    shapes = {n: {0: batch, 1: seq} for n in names}
    out.mkdir(parents=True, exist_ok=True)
    artifacts = {}
    if "onnx" in formats or "ort" in formats:
        torch.onnx.export(module, example, str(out / "model.onnx"), input_names=names,
                          output_names=[output_name(bundle.task)], dynamic_shapes=shapes, dynamo=True,
                          external_data=False)
        artifacts["onnx"] = out / "model.onnx"
    if "ort" in formats:
        artifacts["ort"] = onnx_to_ort(out / "model.onnx")
    if "pte" in formats:
        artifacts["pte"] = to_pte(module, example, shapes, out / "model.pte")
    bundle = bundle.derive(artifacts=artifacts)
    bundle.save(out)
    manifest = {"schema_version": 1, "task": bundle.task,
                "inputs": [{"name": n, "dtype": "int64", "shape": ["batch", "seq"]} for n in names],
                "outputs": [{"name": output_name(bundle.task), "dtype": "float32"}]}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    if bundle.tokenizer is not None:
        bundle.tokenizer.save_pretrained(out)
    return out


def onnx_to_ort(onnx_path: Path) -> Path:
    import onnxruntime as ort

    target = onnx_path.with_suffix(".ort")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(target)
    options.add_session_config_entry("session.save_model_format", "ORT")
    ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    return target


def to_pte(module, example, shapes, path: Path) -> Path:
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    program = torch.export.export(module, example, dynamic_shapes=shapes)
    lowered = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()]).to_executorch()
    path.write_bytes(lowered.buffer)
    return path
