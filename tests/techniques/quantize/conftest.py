"""Fixtures for quantization tests: tiny float ONNX graphs from edgelm.export.onnx (the graphs the quantize stage
receives), exported once per session, plus their onnxruntime-fused variants."""

from __future__ import annotations

from pathlib import Path

import pytest


def export_tiny_onnx(model_dir: Path, task: str, out: Path) -> Path:
    """The export package's own float graph (KV-cache decoders included), without its fusion pass."""
    from edgelm.export.onnx import export_onnx
    from edgelm.models.loading import load_model

    return export_onnx(load_model(str(model_dir), task=task), out.parent).path


_EXPORTED: dict = {}  # module-level: tests/stages/test_quantize.py imports these fixtures too; export once


@pytest.fixture(scope="session")
def tiny_onnx(tiny_model, tmp_path_factory):
    """tiny_onnx(arch, task) -> (hf folder, float model.onnx) exported once per session."""
    cache = _EXPORTED

    def make(arch: str, task: str | None = None):
        key = (arch, task)
        if key not in cache:
            folder = tiny_model(arch, task)
            from edgelm.models.loading import load_model

            real_task = task or load_model(str(folder)).task
            out = tmp_path_factory.mktemp(f"onnx-{arch}-{real_task}") / "model.onnx"
            cache[key] = (folder, export_tiny_onnx(folder, real_task, out))
        return cache[key]

    return make


@pytest.fixture(scope="session")
def fused_onnx(tiny_onnx, tmp_path_factory):
    """fused_onnx(arch, task) -> the tiny graph after onnxruntime.transformers fusions (SkipLayerNorm, BiasGelu,
    SkipSimplifiedLayerNorm) with its value_info stripped: contrib-op outputs then have no inferable type, the
    situation that needs the quantizer's DefaultTensorType."""
    cache = {}

    def make(arch: str, task: str | None = None):
        key = (arch, task)
        if key not in cache:
            import onnx
            from onnxruntime.transformers.optimizer import optimize_model

            folder, path = tiny_onnx(arch, task)
            model_type = "bert" if arch in ("bert", "roberta", "distilbert", "electra") else "gpt2"
            fused = optimize_model(str(path), model_type=model_type, num_heads=4, hidden_size=32, opt_level=1).model
            fused.graph.ClearField("value_info")
            out = tmp_path_factory.mktemp(f"fused-{arch}") / "model.onnx"
            onnx.save(fused, str(out))
            cache[key] = (folder, out)
        return cache[key]

    return make


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from edgelm.models.loading import load_tokenizer

    return lambda folder: load_tokenizer(folder)


@pytest.fixture(scope="session")
def tied_onnx(tiny_onnx, tmp_path_factory):
    """The tiny llama graph made tied the way torch.onnx.export writes a tied LM head: the logits MatMul weight is
    a second (transposed) copy of the embedding table."""
    import onnx
    from onnx import numpy_helper

    folder, path = tiny_onnx("llama", "causal-lm")
    model = onnx.load(str(path))
    inits = {t.name: t for t in model.graph.initializer}
    table = next(inits[n.input[0]] for n in model.graph.node if n.op_type == "Gather" and n.input[0] in inits)
    head = next(n for n in model.graph.node if n.op_type == "MatMul" and "logits" in n.output)
    inits[head.input[1]].CopyFrom(numpy_helper.from_array(numpy_helper.to_array(table).T.copy(), head.input[1]))
    out = tmp_path_factory.mktemp("tied-llama") / "model.onnx"
    onnx.save(model, str(out))
    return folder, out


@pytest.fixture(scope="session")
def fused_tied_onnx(tied_onnx, tmp_path_factory):
    """The tied graph as the export optimiser writes it: the LM head is FusedMatMul(transB=1) over the embedding
    table itself (no transposed copy)."""
    import onnx
    from onnx import helper

    folder, tied = tied_onnx
    model = onnx.load(str(tied))
    table = next(n.input[0] for n in model.graph.node if n.op_type == "Gather")
    head = next(n for n in model.graph.node if n.op_type == "MatMul" and "logits" in n.output)
    model.graph.initializer.remove(next(t for t in model.graph.initializer if t.name == head.input[1]))
    fused = helper.make_node("FusedMatMul", [head.input[0], table], list(head.output), name="lm_head_fused",
                             domain="com.microsoft", transB=1)
    model.graph.node.insert(list(model.graph.node).index(head), fused)
    model.graph.node.remove(head)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    out = tmp_path_factory.mktemp("fused-tied-llama") / "model.onnx"
    onnx.save(model, str(out))
    return folder, out


@pytest.fixture(scope="session")
def export_fused_onnx(tiny_onnx, tmp_path_factory):
    """export_fused_onnx(arch, task) -> the tiny graph after the export stage's own fusion pass (onnxscript ORT
    fusions: Attention with the QKV weights inside, SkipLayerNormalization, BiasGelu, MultiHeadAttention)."""
    cache = {}

    def make(arch: str, task: str | None = None):
        if (arch, task) not in cache:
            import shutil

            from edgelm.export.optimize import optimize_onnx

            folder, path = tiny_onnx(arch, task)
            out = tmp_path_factory.mktemp(f"export-fused-{arch}") / "model.onnx"
            shutil.copy(path, out)
            optimize_onnx(out)
            cache[(arch, task)] = (folder, out)
        return cache[(arch, task)]

    return make
