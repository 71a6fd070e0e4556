"""tools/llamacpp_compare.py on a tiny int4 decoder: worker processes, interleaved rounds, JSON rows; llama.cpp
is skipped with the reason when llama-cpp-python is absent (never replaced by something else)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "tools"))

import llamacpp_compare  # noqa: E402


FAKE_LLAMA_BENCH = """#!/bin/sh
# prints what llama-bench -o json prints, for tg 100 / pp 400 tok/s at every depth asked for
cat <<'JSON'
[{"build_commit": "abc1234", "build_number": 42, "cpu_info": "fake", "backends": "CPU", "model_type": "llama",
  "model_size": 1, "n_threads": 2, "n_batch": 2048, "type_k": "f16", "n_prompt": 4, "n_gen": 0, "n_depth": 0,
  "avg_ts": 400.0, "stddev_ts": 1.0},
 {"build_commit": "abc1234", "build_number": 42, "n_prompt": 0, "n_gen": 4, "n_depth": 0, "avg_ts": 100.0, "stddev_ts": 2.0},
 {"build_commit": "abc1234", "build_number": 42, "n_prompt": 0, "n_gen": 4, "n_depth": 4, "avg_ts": 90.0, "stddev_ts": 2.0}]
JSON
"""


def tiny_int4(tiny_onnx, tmp_path) -> Path:
    import shutil

    from edgelm.techniques.quantize.onnx_quant import QuantOptions, quantize_onnx

    folder, src = tiny_onnx("llama", "causal-lm")
    out = tmp_path / "int4"
    out.mkdir()
    quantize_onnx(src, out / "model.onnx", QuantOptions(method="int4"))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(Path(folder) / name, out / name)
    return out


def test_compare_rows_and_skip_reasons(tiny_onnx, tmp_path, monkeypatch):
    out = tiny_int4(tiny_onnx, tmp_path)
    monkeypatch.delenv("EDGELM_LLAMA_BENCH", raising=False)
    monkeypatch.setattr(llamacpp_compare, "NATIVE_DEFAULT", tmp_path / "absent" / "llama-bench")
    monkeypatch.setattr(llamacpp_compare.shutil, "which", lambda name: None)
    args = llamacpp_compare.parse_args(["--onnx", str(out), "--rounds", "1", "--seconds", "0.2", "--new-tokens", "4",
                                        "--prompt-len", "4", "--gguf", str(tmp_path / "absent.gguf"), "--python-llamacpp"])
    result = llamacpp_compare.compare(args)
    onnx_row = result["rows"][0]
    assert onnx_row["runtime"] == "ort-cpu:int4" and onnx_row["decode_tok_s"] > 0 and not onnx_row["errors"]
    assert "no llama-bench binary" in result["skipped"]["llama-bench"] and result["ratios"] == {}
    if importlib.util.find_spec("llama_cpp") is None:
        assert "llama-cpp-python" in result["skipped"]["llama.cpp (python)"] and len(result["rows"]) == 1
    else:  # installed: a missing GGUF is a worker error, reported in the row, not a crash
        assert result["rows"][1]["errors"]
    assert result["machine"]["cpu_model"] and result["schema_version"] == 2
    assert result["read_bandwidth_gb_s"]["median"] > 0 and result["roofline"]["roofline_tok_s"] > 0


def test_native_llama_bench_and_lookup_sides_give_the_target_ratios(tiny_onnx, tmp_path):
    out = tiny_int4(tiny_onnx, tmp_path)
    fake = tmp_path / "llama-bench"
    fake.write_text(FAKE_LLAMA_BENCH)
    fake.chmod(0o755)
    args = llamacpp_compare.parse_args(["--onnx", str(out), "--rounds", "1", "--seconds", "0.2", "--new-tokens", "4",
                                        "--prompt-len", "4", "--gguf", str(tmp_path / "model.gguf"), "--lookup",
                                        "--llama-bench", str(fake)])
    result = llamacpp_compare.compare(args)
    rows = {r["kind"]: r for r in result["rows"]}
    native, plain, lookup = rows["native"], rows["onnx"], rows["lookup"]
    assert native["tg4@d0"] == 100.0 and native["pp4@d0"] == 400.0 and native["per_round"]["tg4@d0"] == [100.0]
    assert native["build"]["build_commit"] == "abc1234" and result["versions"]["llama-bench"]["build_number"] == 42
    assert lookup["tokens_identical"] is True and lookup["lookup_decode_tok_s"] > 0 and len(lookup["greedy_decode_tok_s_per_round"]) == 1
    ratios = result["ratios"]
    assert ratios["edgelm_decode_vs_llama_bench_tg4"] == round(plain["decode_tok_s"] / 100.0, 3)
    assert ratios["edgelm_decode_vs_llama_bench_tg4_at_depth_4"] == round(plain["decode_tok_s"] / 90.0, 3)
    assert ratios["lookup_vs_llama_bench_tg4"] == round(lookup["lookup_decode_tok_s"] / 100.0, 3)


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
