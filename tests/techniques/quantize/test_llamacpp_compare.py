"""tools/llamacpp_compare.py on a tiny int4 decoder: worker processes, interleaved rounds, JSON rows; llama.cpp
is skipped with the reason when llama-cpp-python is absent (never replaced by something else)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "tools"))

import llamacpp_compare  # noqa: E402


def test_compare_rows_and_skip_reason(tiny_onnx, tmp_path):
    import shutil

    folder, src = tiny_onnx("llama", "causal-lm")
    out = tmp_path / "int4"
    out.mkdir()
    from edgelm.techniques.quantize.onnx_quant import QuantOptions, quantize_onnx

    quantize_onnx(src, out / "model.onnx", QuantOptions(method="int4"))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(Path(folder) / name, out / name)
    args = llamacpp_compare.parse_args(["--onnx", str(out), "--rounds", "1", "--seconds", "0.2", "--new-tokens", "4",
                                        "--prompt-len", "4", "--gguf", str(tmp_path / "absent.gguf")])
    result = llamacpp_compare.compare(args)
    onnx_row = result["rows"][0]
    assert onnx_row["runtime"] == "ort-cpu:int4" and onnx_row["decode_tok_s"] > 0 and not onnx_row["errors"]
    if importlib.util.find_spec("llama_cpp") is None:
        assert "llama-cpp-python" in result["skipped"]["llama.cpp"] and len(result["rows"]) == 1
    else:  # installed: a missing GGUF is a worker error, reported in the row, not a crash
        assert result["rows"][1]["errors"]
    assert result["machine"]["cpu_model"] and result["schema_version"] == 1


def test_llamacpp_generator_reads_real_logits():
    """The llama.cpp side decodes text (its `scores` buffer stays zeros unless logits_all: reading it gave token 0
    at every step, a generator that timed the model but never read its answer)."""
    import pytest

    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python is not installed (pip install 'edgelm[llamacpp]')")
    try:
        gguf = llamacpp_compare.default_gguf()
    except Exception as exc:  # the built-in GGUF package is absent
        pytest.skip(f"SmolLM2 GGUF absent: {exc}")
    import numpy as np

    from edgelm.runtimes.llama_cpp import LlamaCppGenerator, LlamaCppLM

    generator = LlamaCppGenerator(LlamaCppLM(gguf, threads=2, n_ctx=64, all_logits=False))
    token, state = generator.prefill(np.array([[504, 2365, 282, 260, 1345, 3040, 314]]))
    tokens = [token]
    for _ in range(6):
        token, state = generator.decode(token, state)
        tokens.append(token)
    assert len(set(tokens)) > 1 and max(tokens) > 0
