"""The llama-cpp runtime on tiny GGUFs: logits against torch (F32 tight, Q8_0 / Q4_0 at their tolerances), greedy
tokens through the KV cache, the bench generator and eval's perplexity through the shared metric code.
Every test that loads llama.cpp skips with the runtime's own reason when llama-cpp-python is absent."""

from __future__ import annotations

import numpy as np
import pytest

from edgelm.runtimes.base import RUNTIMES, open_runner, resolve_target, unavailable
from tests.export.test_gguf import build_bpe_llama
from tests.techniques.prune.helpers import run

REASON = unavailable("llama-cpp")
needs_llama_cpp = pytest.mark.skipif(REASON is not None, reason=f"llama-cpp unavailable: {REASON}")
IDS = np.array([[2, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50]], dtype=np.int64)


def test_llama_cpp_is_registered_for_gguf_and_says_why_when_absent():
    spec = RUNTIMES.get("llama-cpp")
    assert (spec.artifact, spec.device, spec.generates, spec.evaluates) == ("gguf", "cpu", True, ("gguf",))
    reason = spec.unavailable()
    assert reason is None or (("llama-cpp-python" in reason or "AMX" in reason) and "\n" not in reason)


def test_an_amx_build_is_refused_unless_allowed(monkeypatch):
    from edgelm.runtimes.llama_cpp import AMX_OVERRIDE, amx_refusal

    amx, plain = "CPU : AVX2 = 1 | AMX_INT8 = 1 | OPENMP = 1", "CPU : AVX2 = 1 | AVX512 = 1 | OPENMP = 1"
    monkeypatch.delenv(AMX_OVERRIDE, raising=False)
    assert amx_refusal(plain) is None
    reason = amx_refusal(amx)
    assert "GGML_AMX_INT8=OFF" in reason and AMX_OVERRIDE in reason and "\n" not in reason
    monkeypatch.setenv(AMX_OVERRIDE, "1")
    assert amx_refusal(amx) is None


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    from edgelm.models.loading import load_model

    return load_model(str(build_bpe_llama(tmp_path_factory.mktemp("bpe-llama"))))


@pytest.fixture(scope="module")
def exported(bundle, tmp_path_factory):
    """{gguf type: export folder}; the export stage's own parity check runs on llama.cpp for each."""
    root = tmp_path_factory.mktemp("gguf")
    return {t: run("export", bundle, root / t, formats=["gguf"], gguf_type=t, greedy_steps=8).bundle for t in ("F32", "Q8_0", "Q4_0")}


def torch_logits(bundle, ids=IDS) -> np.ndarray:
    import torch

    with torch.no_grad():
        return bundle.model(input_ids=torch.from_numpy(ids)).logits.numpy()


@needs_llama_cpp
def test_float_gguf_logits_match_torch_on_every_position(bundle, exported):
    from edgelm.verify.tolerances import GGUF_VS_TORCH

    runner = open_runner("llama-cpp", resolve_target(exported["F32"].artifacts["gguf"].parent), threads=2)
    logits = runner.run({"input_ids": IDS, "attention_mask": np.ones_like(IDS)})[0]
    reference = torch_logits(bundle)
    assert logits.shape == reference.shape
    assert np.abs(logits - reference).max() <= GGUF_VS_TORCH["F32"]["max_abs_diff"]
    assert (logits.argmax(-1) == reference.argmax(-1)).all()


@needs_llama_cpp
@pytest.mark.parametrize("gguf_type", ["F32", "Q8_0", "Q4_0"])
def test_export_parity_on_llama_cpp_is_recorded_per_type(exported, gguf_type):
    from edgelm.core.records import Manifest

    parity = Manifest.load(exported[gguf_type].artifacts["gguf"].parent).parity["gguf"]
    greedy = parity["free_greedy"] if gguf_type == "Q4_0" else parity  # 4-bit: judged teacher-forced, greedy kept
    assert "llama_cpp" not in parity and greedy["greedy_steps"] == 8
    if gguf_type == "F32":
        assert parity["greedy_match"] == 1.0 and parity["argmax_agreement"] == 1.0
    assert parity["cosine"] >= parity["tolerances"]["min_cosine"]


@needs_llama_cpp
def test_bench_generator_decodes_the_torch_greedy_tokens(bundle, exported):
    from edgelm.verify.parity import torch_greedy

    runner = open_runner("llama-cpp", resolve_target(exported["F32"].artifacts["gguf"].parent), threads=1)
    generator = runner.generator()
    token, state = generator.prefill(IDS)
    tokens = [token]
    for _ in range(7):
        token, state = generator.decode(token, state)
        tokens.append(token)
    assert tokens == torch_greedy(bundle.model, IDS, 8)[0]
    assert runner.threads == 1


@needs_llama_cpp
def test_eval_perplexity_on_llama_cpp_goes_through_the_shared_metric(bundle, exported):
    from edgelm.measure.artifacts import artifact_model
    from edgelm.measure.quality import perplexity, torch_model

    text = "the movie was good and the acting was great . " * 8
    on_llama = perplexity(artifact_model(exported["F32"], "llama-cpp"), text)
    on_torch = perplexity(torch_model(bundle), text)
    assert on_llama["perplexity"] == pytest.approx(on_torch["perplexity"], rel=1e-3)


def test_k_quant_goes_through_llama_quantize_with_an_importance_matrix(bundle, tmp_path):
    from edgelm.export.gguf import export_gguf, llama_tool

    if llama_tool("llama-quantize") is None or llama_tool("llama-imatrix") is None:
        pytest.skip("llama.cpp's llama-quantize / llama-imatrix not on PATH or in $EDGELM_LLAMA_CPP_BIN")
    written = export_gguf(bundle, tmp_path, "Q4_K_M", calibration=["the movie was good and the acting was great ."] * 40)
    assert written.type == "Q4_K_M" and written.imatrix and not any("imatrix" in n for n in written.notes)
    import gguf

    fields = gguf.GGUFReader(str(written.path)).fields
    assert fields["general.file_type"].contents() == gguf.LlamaFileType.MOSTLY_Q4_K_M
