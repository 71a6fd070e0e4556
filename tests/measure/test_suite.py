"""Bench orchestration end to end on a tiny export, ORT runtimes only (fast workers): the JSON contract, skip
reasons, fresh-process figures, interleaved comparison and the CLI. Timings are produced, never asserted."""

import json
import shutil

import pytest
from click.testing import CliRunner

from edgelm.runtimes.base import resolve_target
from edgelm.measure.suite import BENCH_SCHEMA, BenchSettings, run_bench
from edgelm.cli import main

FAST = dict(seconds=0.2, warmup=1, min_repeats=3)
ROW_FIELDS = {"artifact", "runtime", "threads", "batch", "seq_len", "load_ms", "first_ms", "p50_ms", "p90_ms", "p99_ms",
              "mean_ms", "std_ms", "n", "peak_rss_mb", "size_mb", "times_ms"}


@pytest.fixture(scope="module")
def bench(tiny_export, tmp_path_factory):
    copy = tmp_path_factory.mktemp("second") / "candidate"
    shutil.copytree(tiny_export, copy)
    meta = json.loads((tiny_export / "edgelm.json").read_text())  # keep model_dir pointing at the real weights
    meta["model_dir"] = str((tiny_export / meta["model_dir"]).resolve())
    (copy / "edgelm.json").write_text(json.dumps(meta))
    data = tmp_path_factory.mktemp("data") / "dev.tsv"
    data.write_text("label\tsentence\n" + "".join(f"{i % 2}\t{' '.join(['a good movie'] * (1 + i % 4))}\n" for i in range(12)))
    settings = BenchSettings(runtimes=["ort-cpu", "ort-mobile", "torch-cuda"], threads=None, shapes=["1x8", "2x16"],
                             data=str(data), max_samples=6, **FAST)
    base = resolve_target(tiny_export, name="base")
    return run_bench([base, resolve_target(copy, name="cand")], settings, baseline=base)


def test_bench_json_contract(bench):
    assert bench["schema_version"] == BENCH_SCHEMA and bench["kind"] == "edgelm-bench"
    assert bench["machine"]["cpu_model"] and "logical_cores" in bench["machine"] and "flags" in bench["machine"]
    assert "onnxruntime" in bench["versions"] and bench["settings"]["seconds"] == 0.2
    labels = [c["label"] for c in bench["cases"]]
    assert labels[0].startswith("data:") and labels[0].endswith("/dev.tsv") and labels[1:] == ["b1xs8", "b2xs16"]
    data_case = bench["cases"][0]
    assert data_case["samples"] == 6 and data_case["padded"] is False and data_case["seq_len_max"] >= data_case["seq_len_p50"] > 0
    json.dumps(bench)


def test_rows_per_artifact_runtime_threads_case(bench):
    timed = [r for r in bench["rows"] if "p50_ms" in r]
    # 2 artifacts x (ort-cpu default + ort-mobile 1/2/4 threads) x 3 cases
    assert len(timed) == 2 * 4 * 3
    assert sorted({r["threads"] for r in timed if r["runtime"] == "ort-mobile"}) == [1, 2, 4]
    for row in timed:
        assert ROW_FIELDS <= set(row), ROW_FIELDS - set(row)
        assert row["n"] == len(row["times_ms"]) >= 3
        assert row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"] and row["peak_rss_mb"] > 0 and row["size_mb"] > 0
    sizes = {r["runtime"]: r["size_mb"] for r in timed}
    assert sizes["ort-mobile"] != sizes["ort-cpu"]  # each runtime reports the file it loads


def test_absent_runtime_is_a_skipped_row_with_reason(bench):
    rows = [r for r in bench["rows"] if r["runtime"] == "torch-cuda"]
    if "p50_ms" in rows[0]:
        pytest.skip("this machine has CUDA")
    assert len(rows) == 2 and all("cuda" in r["skipped"].lower() for r in rows)


def test_interleaved_comparison_and_speedup(bench):
    comps = [c for c in bench["comparisons"] if "ratio" in c]
    assert {c["runtime"] for c in comps} == {"ort-cpu", "ort-mobile"} and all(c["artifact"] == "cand" for c in comps)
    for c in comps:
        assert c["ratio"]["n"] >= 3 and c["ratio"]["p10"] <= c["ratio"]["median"] <= c["ratio"]["p90"]
    assert set(bench["speedup"]) == {"ort-cpu", "ort-mobile"}
    assert bench["speedup"]["ort-cpu"] == next(c for c in comps if c["runtime"] == "ort-cpu")["ratio"]["median"]


def test_rounds_interleave_fresh_workers_and_report_the_median(tiny_export):
    from edgelm.measure.timing import median

    settings = BenchSettings(runtimes=["ort-cpu", "ort-mobile"], threads=[1], shapes=["1x8"], rounds=2, **FAST)
    rows = run_bench([resolve_target(tiny_export, name="cand")], settings)["rows"]
    assert [(r["runtime"], r["rounds"]) for r in rows] == [("ort-cpu", 2), ("ort-mobile", 2)]
    for row in rows:
        assert row["p50_ms"] == median(row["by_round"]["p50_ms"]) and len(row["by_round"]["p50_ms"]) == 2
        assert row["n"] == len(row["times_ms"]) >= 6


def test_merge_rounds_keeps_measured_rounds_and_unmeasured_rows():
    from edgelm.measure.suite import merge_rounds

    one = [{"artifact": "a", "runtime": "ort-cpu", "case": "c", "p50_ms": 1.0, "times_ms": [1.0], "stop": "stable"},
           {"artifact": "a", "runtime": "llama-cpp", "skipped": "llama-cpp-python is not installed"}]
    two = [{"artifact": "a", "runtime": "ort-cpu", "case": "c", "error": "worker died"}, one[1]]
    three = [{**one[0], "p50_ms": 3.0, "times_ms": [3.0, 3.1]}, one[1]]
    timed, skipped = merge_rounds([one, two, three])
    assert timed["p50_ms"] == 2.0 and timed["rounds"] == 2 and timed["times_ms"] == [1.0, 3.0, 3.1] and timed["n"] == 3
    assert timed["by_round"] == {"p50_ms": [1.0, 3.0]} and timed["stop"] == "stable"
    assert skipped == one[1] and "rounds" not in skipped


def test_cli_bench_writes_json_html_and_report_rerenders(tiny_export, tmp_path):
    out = tmp_path / "b.json"
    result = CliRunner().invoke(main, ["bench", str(tiny_export), "--runtime", "ort-cpu", "executorch", "--shapes", "1x8",
                                       "--seconds", "0.1", "--json", str(out), "--html", str(tmp_path / "b.html")])
    assert result.exit_code == 0, result.output
    bench = json.loads(out.read_text())
    assert [r["runtime"] for r in bench["rows"]] == ["ort-cpu", "executorch"]
    assert "no model.pte" in bench["rows"][1]["skipped"] and "| ort-cpu |" in result.output
    assert "<svg" in (tmp_path / "b.html").read_text()
    again = CliRunner().invoke(main, ["report", str(out)])
    assert again.exit_code == 0 and (tmp_path / "b.md").is_file() and (tmp_path / "b.html").is_file()


def test_cli_bench_bad_input_is_one_line(tiny_export, tmp_path):
    result = CliRunner().invoke(main, ["bench", str(tiny_export), "--runtime", "tflite"])
    assert result.exit_code == 2 and "unknown" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(main, ["bench", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "no such folder" in result.output
    result = CliRunner().invoke(main, ["bench", str(tiny_export), "--shapes", "128", "--runtime", "ort-cpu"])
    assert result.exit_code == 2 and "BATCHxSEQ_LEN" in result.output
