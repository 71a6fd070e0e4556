"""The Python API (edgelm.api): a plain context-encoder / memory-network module through export (parity on
dynamic shapes), int8 quantize and bench; the stages that need an HF model refuse it in one line; an in-memory
HF model through compress by the README's own snippet (a tiny model here, MiniLM when `real`)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import edgelm
from edgelm.core.records import Manifest, StageMetrics

README = Path(__file__).resolve().parents[1] / "README.md"


def context_encoder():
    """A GRU context encoder over token ids with a key-value memory read: logits over the vocabulary and the
    context embedding, as the dialogue / memory-network designs describe."""
    import torch
    from torch import nn

    class ContextEncoder(nn.Module):
        def __init__(self, vocab=50, dim=16, slots=8):
            super().__init__()
            self.embed, self.gru = nn.Embedding(vocab, dim), nn.GRU(dim, dim, batch_first=True)
            self.query, self.head = nn.Linear(dim, dim), nn.Linear(2 * dim, vocab)
            self.keys, self.values = nn.Parameter(torch.randn(slots, dim)), nn.Parameter(torch.randn(slots, dim))

        def forward(self, input_ids, attention_mask):
            hidden, _ = self.gru(self.embed(input_ids))
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            context = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            read = torch.softmax(self.query(context) @ self.keys.T, dim=-1) @ self.values
            return self.head(torch.cat([context, read], -1)), context

    torch.manual_seed(0)
    return ContextEncoder()


def module_inputs():
    import torch

    ids = torch.randint(0, 50, (2, 6))
    mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2])
    axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
            "logits": {0: "batch"}, "context": {0: "batch"}}
    return dict(example_inputs=(ids, mask), output_names=["logits", "context"], dynamic_axes=axes)


@pytest.fixture(scope="module")
def module_export(tmp_path_factory):
    out = tmp_path_factory.mktemp("api") / "encoder"
    return edgelm.export(context_encoder(), out=out, **module_inputs())


def test_a_plain_module_exports_with_named_dynamic_io_and_parity(module_export):
    assert isinstance(module_export, edgelm.StageOutput) and isinstance(module_export, StageMetrics)
    assert module_export.status == "ran" and module_export.kind == "export"
    parity = module_export.metrics["parity"]["onnx"]
    assert parity["max_abs_diff"] < 1e-4 and parity["inputs"].endswith("varied dynamic dims")
    manifest = module_export.manifest
    assert isinstance(manifest, Manifest) and manifest.task == "module"
    assert [(t.name, t.shape) for t in manifest.inputs] == [("input_ids", ["batch", "sequence"]),
                                                            ("attention_mask", ["batch", "sequence"])]
    assert [t.name for t in manifest.outputs] == ["logits", "context"] and manifest.outputs[0].shape[0] == "batch"
    assert "example_inputs.npz" in manifest.files


def test_the_artifact_runs_at_other_shapes_like_the_module(module_export):
    import numpy as np
    import onnxruntime as ort
    import torch

    module, ids = context_encoder(), torch.randint(0, 50, (3, 11))
    mask = torch.ones_like(ids)
    session = ort.InferenceSession(str(module_export.path / "model.onnx"), providers=["CPUExecutionProvider"])
    logits, _ = session.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})
    with torch.no_grad():
        expected = module.eval()(ids, mask)[0].numpy()
    assert np.abs(logits - expected).max() < 1e-4


def test_a_plain_module_quantizes_int8_from_its_export_and_in_memory(module_export, tmp_path):
    from_folder = edgelm.quantize(module_export.out, out=tmp_path / "q-folder", method="int8-dynamic")
    in_memory = edgelm.quantize(context_encoder(), out=tmp_path / "q-memory", **module_inputs())
    for result in (from_folder, in_memory):
        assert result.metrics["parity"]["ok"] and result.metrics["quantization"]["method"] == "int8-dynamic"
        assert result.metrics["quantization"]["op_counts"] and result.manifest.quantization is not None
    assert from_folder.metrics["parity_torch"]["ok"] is None  # a folder holds no torch module to compare with
    assert in_memory.metrics["parity_torch"]["ok"] is True and in_memory.metrics["parity_torch"]["cosine"] > 0.95


def test_a_plain_module_export_quantizes_int4_where_onnx_has_matmuls(module_export, tmp_path):
    result = edgelm.quantize(module_export.out, out=tmp_path / "q4", method="int4", block_size=16)
    assert result.metrics["parity"]["ok"] and result.metrics["quantization"]["op_counts"].get("MatMulNBits", 0) >= 1
    assert result.metrics["size_mb"] < result.metrics["size_mb_float"]


def test_a_plain_module_export_benches_on_its_example_inputs(module_export):
    result = edgelm.bench(module_export, runtimes=["ort-cpu", "torch-cpu"], seconds=0.2, warmup=1, min_repeats=3,
                          compare=False)
    assert isinstance(result, edgelm.BenchResult)
    timed = next(r for r in result.rows if r["runtime"] == "ort-cpu")
    assert timed["case"] == "example_inputs" and timed["p50_ms"] > 0, timed
    skipped = next(r for r in result.rows if r["runtime"] == "torch-cpu")
    assert "no torch weights" in skipped["skipped"]
    assert "ort-cpu" in result.markdown()


@pytest.mark.parametrize("command", ["finetune", "prune", "lowrank", "distill"])
def test_stages_that_need_an_hf_model_refuse_a_plain_module_in_one_line(command, tmp_path):
    with pytest.raises(edgelm.EdgelmError) as info:
        getattr(edgelm, command)(context_encoder(), out=tmp_path / command, **module_inputs())
    message = str(info.value)
    assert "\n" not in message and f"{command} needs a Hugging Face model" in message and "export, quantize" in message
    assert not (tmp_path / command).exists()


def test_a_module_without_example_inputs_or_a_bad_option_is_one_line(tmp_path):
    with pytest.raises(edgelm.EdgelmError, match="needs example_inputs"):
        edgelm.export(context_encoder(), out=tmp_path / "x")
    with pytest.raises(edgelm.EdgelmError, match=r"edgelm.quantize options.method"):
        edgelm.quantize(context_encoder(), out=tmp_path / "y", method="int3", **module_inputs())


def test_in_memory_hf_models_are_saved_once_by_content(tiny_model, tmp_path, monkeypatch):
    import torch
    from transformers import AutoModel, AutoTokenizer

    from edgelm.api import save_in_memory

    monkeypatch.setenv("EDGELM_CACHE", str(tmp_path))
    model, tok = AutoModel.from_pretrained(tiny_model("bert")), AutoTokenizer.from_pretrained(tiny_model("bert"))
    first = save_in_memory(model, tok)
    assert save_in_memory(model, tok) == first and (first / "model.safetensors").is_file()
    with torch.no_grad():
        model.embeddings.word_embeddings.weight[0, 0] += 1.0
    assert save_in_memory(model, tok) != first
    with pytest.raises(edgelm.EdgelmError, match="needs tokenizer="):
        edgelm.export(model, out=tmp_path / "x")


def test_import_edgelm_is_light_and_help_lists_the_stage_options():
    code = "import sys, edgelm; assert 'torch' not in sys.modules and 'edgelm.api' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    doc = edgelm.export.__doc__
    assert "formats: list[Literal['onnx', 'ort', 'pte'" in doc and "dynamic_axes" in doc
    assert "method" in str(__import__("inspect").signature(edgelm.quantize))


# --- the README's Python API section, run as written -----------------------------------------------------------
def readme_snippet() -> str:
    section = README.read_text().split("## Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def run_readme(model_dir: Path, tmp_path, monkeypatch) -> dict:
    code = readme_snippet()
    name = re.search(r'name = "([^"]+)"', code).group(1)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EDGELM_CACHE", str(tmp_path / "cache"))
    scope: dict = {}
    exec(compile(code.replace(f'"{name}"', repr(str(model_dir))), "README.md", "exec"), scope)  # noqa: S102
    return scope


def check_readme_results(scope: dict) -> None:
    run, exp = scope["run"], scope["exp"]
    assert isinstance(run, edgelm.CompressResult) and Path(run.bundle, "manifest.json").is_file()
    assert run.headline["compression"] > 1 and [s.kind for s in run.run.stages][:2] == ["export", "quantize"]
    assert Path(run.run.input["model"]).parent.name == "memory"  # the in-memory model, saved by content
    assert exp.metrics["parity"]["onnx"]["max_abs_diff"] < 1e-4 and exp.manifest.outputs[0].name == "embedding"


def test_the_readme_snippet_runs_on_a_tiny_model(tiny_model, tmp_path, monkeypatch):
    check_readme_results(run_readme(tiny_model("bert"), tmp_path, monkeypatch))


@pytest.mark.real
@pytest.mark.slow
def test_the_readme_snippet_runs_on_minilm(tmp_path, monkeypatch):
    from tests.conftest import require_builtin

    scope = run_readme(require_builtin("minilm-l6"), tmp_path, monkeypatch)
    check_readme_results(scope)
    assert scope["run"].headline["compression"] > 3 and scope["run"].headline["fidelity_cosine_mean"] > 0.99
