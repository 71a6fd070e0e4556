"""tools/int4_sweep.py on a tiny decoder: candidate specs parse into QuantOptions fields, every candidate gets
its perplexity against the float graph on one protocol, its size and the stage's prose parity, in results.jsonl."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "tools"))

import int4_sweep  # noqa: E402


def test_parse_candidate():
    assert int4_sweep.parse_candidate("a:block_size=64,symmetric=False,algorithm=kquant,exclude=n1+n2") == (
        "a", {"block_size": 64, "symmetric": False, "algorithm": "kquant", "exclude": ["n1", "n2"]})
    assert int4_sweep.parse_candidate("plain") == ("plain", {})


def test_sweep_rows(tiny_onnx, tmp_path):
    folder, src = tiny_onnx("llama", "causal-lm")
    float_dir = tmp_path / "float"
    float_dir.mkdir()
    shutil.copy(src, float_dir / "model.onnx")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(Path(folder) / name, float_dir / name)
    text = tmp_path / "text.txt"
    text.write_text(" ".join(["the river crossing grew into a town over the following centuries"] * 40))
    assert int4_sweep.main([str(float_dir), "rtn:block_size=16", "kq:algorithm=kquant,block_size=16", "--text", str(text),
                            "--tokens", "200", "--window", "64", "--stride", "32", "--out", str(tmp_path / "out")]) == 0
    rows = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert [r["name"] for r in rows] == ["rtn", "kq"]
    for row in rows:
        assert row["tokens"] == 199 and 0.5 < row["ratio"] < 1.5 and row["size_mb"] > 0
        assert row["prose_perplexity_ratio"] > 0 and (tmp_path / "out" / row["name"] / "model.onnx").is_file()
    assert rows[1]["options"]["algorithm"] == "kquant"


def test_one_calibration_pass_serves_every_candidate_with_its_own_copy():
    import numpy as np

    from edgelm.techniques.quantize import calibrated

    original, calls = calibrated.input_moments, []

    def measure(model, reader, exclude=()):
        calls.append(exclude)
        return {"x": calibrated.Moments(np.eye(2), 3)}

    calibrated.input_moments = measure
    try:
        with int4_sweep.one_calibration_pass():
            first = calibrated.input_moments(None, None)
            first["x"].h *= 5  # AWQ rescales its copy in place
            second = calibrated.input_moments(None, None)
            calibrated.input_moments(None, None, ["n1"])
        assert len(calls) == 2 and np.array_equal(second["x"].h, np.eye(2))
        assert calibrated.input_moments is measure
    finally:
        calibrated.input_moments = original
