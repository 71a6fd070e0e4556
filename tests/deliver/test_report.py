"""Reports render from JSON alone: Markdown tables, self-contained HTML with inline SVG plots, Pareto fronts."""

import json
import re

import pytest

from edgelm.measure.plots import pareto_front
from edgelm.core.errors import EdgelmError
from edgelm.deliver.report import render_path, render_run
from edgelm.measure.bench_report import bench_markdown, write_bench_reports

MACHINE = {"cpu_model": "Test CPU", "flags": ["avx2", "avx512_vnni"], "logical_cores": 2, "usable_cores": 2,
           "physical_cores": 2, "memory_gb": 8.0, "load_avg_1m": 0.1, "platform": "Linux", "python": "3.11"}
SETTINGS = {"seconds": 1.0, "rel_tol": 0.02, "warmup": 3, "min_repeats": 10}


def row(artifact, runtime, p50, size, threads=None, accuracy=None, case="b1xs8"):
    r = {"artifact": artifact, "runtime": runtime, "threads": threads, "case": case, "inputs": "fixed", "batch": 1,
         "seq_len": 8, "p50_ms": p50, "p90_ms": p50 * 1.2, "p99_ms": p50 * 1.5, "mean_ms": p50, "std_ms": 0.1, "n": 5,
         "load_ms": 10.0, "first_ms": 2 * p50, "peak_rss_mb": 100.0, "size_mb": size, "times_ms": [p50 * f for f in (0.9, 1, 1, 1.1, 1.3)]}
    if accuracy is not None:
        r["accuracy"] = accuracy
    return r


def make_bench(accuracy=False):
    acc = (lambda a: a) if accuracy else (lambda a: None)
    rows = [row("source", "ort-cpu", 4.0, 90.0, accuracy=acc(91.0)), row("int8", "ort-cpu", 2.0, 23.0, accuracy=acc(90.0)),
            row("int8", "ort-mobile", 3.0, 23.0, threads=1, accuracy=acc(90.0)),
            row("pruned", "ort-cpu", 2.5, 60.0, accuracy=acc(85.0)),
            {"artifact": "int8", "runtime": "torch-cuda", "threads": None, "size_mb": None, "skipped": "no CUDA here"}]
    comparisons = [{"baseline": "source", "artifact": "int8", "runtime": "ort-cpu", "threads": None, "case": "b1xs8",
                    "baseline_p50_ms": 4.0, "candidate_p50_ms": 2.0, "ratio": {"median": 2.0, "p10": 1.8, "p90": 2.2, "n": 40},
                    "stop": "stable"}]
    return {"schema_version": 1, "kind": "edgelm-bench", "created": "2026-11-22T12:00:00Z", "machine": MACHINE,
            "versions": {"onnxruntime": "1.31.1"}, "settings": SETTINGS, "baseline": "source",
            "cases": [{"kind": "fixed", "label": "b1xs8", "batch": 1, "seq_len": 8, "calls": 1}],
            "rows": rows, "comparisons": comparisons, "speedup": {"ort-cpu": 2.0}}


def test_pareto_front():
    points = [(4.0, 0.91), (2.0, 0.90), (3.0, 0.90), (2.5, 0.85)]
    assert pareto_front(points, maximize_y=True) == [1, 0]  # fastest, then most accurate
    assert pareto_front([(1, 5), (2, 1), (3, 3)], maximize_y=False) == [0, 1]


def test_bench_markdown_tables():
    md = bench_markdown(make_bench())
    assert "| int8 | ort-mobile | 1 | 3.000 |" in md and "| p50 ms |" in md and "| peak RSS MB | size MB |" in md
    assert "| int8 | ort-cpu | – | b1xs8 | 4.000 | 2.000 | 2.000× | 1.800–2.200 | 40 |" in md
    assert "skipped: no CUDA here" in md and "avx512_vnni" in md


@pytest.mark.parametrize("accuracy", [False, True])
def test_bench_html_is_self_contained_with_plots(tmp_path, accuracy):
    md, page = write_bench_reports(make_bench(accuracy), tmp_path)
    text = page.read_text()
    assert md.read_text().startswith("# edgelm bench")
    assert text.count("<svg") == 2  # latency distribution + trade-off scatter
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", text), "the page must not load anything from the network"
    assert "Pareto front" in text and ("accuracy" in text) == accuracy


def test_report_rerenders_bench_json(tmp_path):
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(make_bench()))
    assert [p.name for p in render_path(path)] == ["bench.md", "bench.html"]
    (tmp_path / "other.json").write_text("{}")
    with pytest.raises(EdgelmError, match="not an edgelm bench JSON"):
        render_path(tmp_path / "other.json")
    with pytest.raises(EdgelmError, match="no run.json or bench.json"):
        render_path(tmp_path / "nothing")


def test_run_report_with_gates_sensitivity_and_bench(tmp_path):
    stages = [{"name": "01-prune", "kind": "prune", "hash": "h", "status": "ran", "seconds": 1.5,
               "metrics": {"size_mb": 60.0, "head_sensitivity": {"layer0": {"drop_pt": 0.4}, "layer1": {"drop_pt": 2.5}}}},
              {"name": "02-bench", "kind": "bench", "hash": "h", "status": "ran", "seconds": 9.0,
               "metrics": {"speedup": {"ort-cpu": 2.0}}}]
    run = {"schema_version": 1, "seed": 0, "input": {"model": "minilm-l6"}, "stages": stages, "total_seconds": 10.5,
           "recipe": "demo", "gates": [{"gate": "min_speedup (ort-cpu vs source)", "metric": "speedup", "source": "02-bench",
                                        "target": ">= 1.5×", "measured": 2.0, "unit": "x", "ok": True},
                                       {"gate": "max_size_mb", "metric": "size_mb", "source": None, "target": "<= 25 MB",
                                        "measured": None, "unit": "MB", "ok": False, "note": "no export or quantize stage in this run"}],
           "environment": {"python": "3.11", "platform": "Linux", "cpu_count": 2, "versions": {"torch": "2.13"}}}
    (tmp_path / "run.json").write_text(json.dumps(run))
    (tmp_path / "02-bench").mkdir()
    (tmp_path / "02-bench" / "bench.json").write_text(json.dumps(make_bench()))
    md_path, html_path = render_run(tmp_path)
    md, page = md_path.read_text(), html_path.read_text()
    assert "| stage | kind | did | time s | size MB | speedup × |" in md  # figures as columns, units in headers
    assert "| 01-prune | prune |  | 1.5 | 60.0 | – |" in md and "| 02-bench | bench |  | 9.0 | – | ort-cpu 2.00 |" in md
    assert md.index("**Gates** | 1 of 2 FAILED") < md.index("## Stages")  # the headline card comes first
    assert "| min_speedup (ort-cpu vs source) | speedup of 02-bench | >= 1.5× | 2.000× | ✅ |" in md
    assert "| max_size_mb | size_mb of no stage | <= 25 MB | not measured: no export or quantize stage in this run | ❌ |" in md
    assert "| layer1 | 2.500 |" in md and "## Sensitivity: 01-prune head_sensitivity" in md
    assert "## Bench (02-bench)" in md and "✅" in md
    assert "<svg" in page and "Gates" in page


def test_run_report_shows_recall_per_label_and_a_confusion_matrix_picture(tmp_path):
    matrix = {"labels": ["ABBR", "DESC", "LOC"], "counts": [[3, 1, 0], [0, 5, 0], [1, 0, 4]]}
    metrics = {"accuracy": 85.714, "reference_accuracy": 90.0, "f1": 84.2, "n": 14,
               "recall_by_label": {"ABBR": 75.0, "DESC": 100.0, "LOC": 80.0}, "confusion_matrix": matrix}
    run = {"schema_version": 1, "seed": 0, "input": {"model": "minilm-l6"}, "total_seconds": 2.0, "recipe": "demo",
           "stages": [{"name": "07-eval", "kind": "eval", "hash": "h", "status": "ran", "seconds": 2.0, "metrics": metrics}],
           "environment": {"python": "3.11", "platform": "Linux", "cpu_count": 2, "versions": {"torch": "2.13"}}}
    (tmp_path / "run.json").write_text(json.dumps(run))
    md_path, html_path = render_run(tmp_path)
    md, page = md_path.read_text(), html_path.read_text()
    assert "## Classification: 07-eval" in md and "accuracy 85.7 pt · reference accuracy 90.0 pt · macro-F1 84.2 pt" in md
    assert "| ABBR | 75.0 |" in md and "| LOC | 1 | 0 | 4 |" in md
    assert "Classification: 07-eval" in page and "<svg" in page and "<td class=\"l\">DESC</td><td>100.0</td>" in page
    assert "<!-- predicted label -->" in page and "<text" not in page  # axis text drawn as paths: no fonts needed


def test_a_compress_run_of_a_classifier_reports_its_confusion_matrix(tiny_model, tmp_path_factory):
    from pathlib import Path

    from tests.deliver.runs import tiny_run

    out = Path(tiny_run("classifier", tiny_model, tmp_path_factory)["out"])
    run = json.loads((out / "run.json").read_text())
    matrix = next(st["metrics"]["confusion_matrix"] for st in run["stages"] if st["kind"] == "eval")
    assert matrix["labels"] == ["0", "1"] and sum(map(sum, matrix["counts"])) == 12
    page = (out / "report.html").read_text()
    assert "<h2>Classification: " in page and "recall pt" in page and page.count("<svg") >= 1


def test_run_report_puts_a_bilstm_student_beside_its_transformer_teacher_and_the_stock_int8(tmp_path):
    """Candidates table: each benched artifact with what made it, the eval that scored it, size, p50 and speed
    against each reference (the run's LoRA int8 and the stock toolchain's int8)."""
    def st(name, kind, **metrics):
        return {"name": name, "kind": kind, "hash": "h", "status": "ran", "seconds": 1.0, "metrics": metrics}

    q8 = {"quantization": {"method": "int8-dynamic"}}
    stages = [st("01-finetune", "finetune", method="lora", eval_accuracy=89.0), st("02-export", "export", formats=["onnx"]),
              st("03-quantize", "quantize", size_mb=23.0, **q8), st("04-eval", "eval", accuracy=88.5),
              st("05-distill", "distill", student="bilstm", teacher="01-finetune"), st("06-export", "export"),
              st("07-quantize", "quantize", size_mb=2.6, **q8), st("08-eval", "eval", accuracy=85.0),
              st("09-bench", "bench", speedup={"ort-mobile": 12.0})]
    run = {"schema_version": 1, "seed": 0, "input": {"model": "minilm-l6"}, "stages": stages, "total_seconds": 9.0,
           "recipe": "bilstm", "environment": {"python": "3.11", "platform": "Linux", "cpu_count": 2, "versions": {}}}
    case = "b1xs8"
    bench = {**make_bench(), "baseline": "baseline:03-quantize",
             "artifacts": {"stock-int8": str(tmp_path / "09-bench" / "stock-int8"), "baseline:03-quantize":
                           str(tmp_path / "03-quantize"), "candidate": str(tmp_path / "07-quantize")},
             "rows": [row("stock-int8", "ort-mobile", 6.0, 23.1, threads=1, case=case),
                      row("baseline:03-quantize", "ort-mobile", 5.0, 23.0, threads=1, case=case),
                      row("candidate", "ort-mobile", 0.4, 2.6, threads=1, case=case)],
             "comparisons": [{"baseline": b, "artifact": "candidate", "runtime": "ort-mobile", "case": case,
                              "threads": 1, "baseline_p50_ms": 5.0, "candidate_p50_ms": 0.4, "stop": "stable",
                              "ratio": {"median": x, "p10": x, "p90": x, "n": 40}}
                             for b, x in (("baseline:03-quantize", 12.0), ("stock-int8", 15.0))]}
    (tmp_path / "run.json").write_text(json.dumps(run))
    (tmp_path / "09-bench").mkdir()
    (tmp_path / "09-bench" / "bench.json").write_text(json.dumps(bench))
    md = render_run(tmp_path)[0].read_text()
    assert "## Candidates" in md
    assert ("| 07-quantize | 05-distill bilstm student from 01-finetune → int8-dynamic | 85.0 | 2.6 | ort-mobile ×1t "
            "| 0.4000 | 12.00× baseline:03-quantize, 15.00× stock-int8 |") in md
    assert "| 03-quantize | 01-finetune lora → int8-dynamic | 88.5 | 23.0 | ort-mobile ×1t | 5.000 | – |" in md
    assert "| stock-int8 | the stock toolchain's int8 (bench reference) | – | 23.1 |" in md
    assert "| 05-distill | distill | bilstm student from 01-finetune |" in md  # the stage table says what it made


def test_decoder_run_report_puts_each_runtime_beside_its_artifacts_quality_and_names_the_pick(tmp_path):
    """Runtimes table: the candidate's decode speed on ort-cpu, ort-mobile and llama-cpp beside the perplexity and
    KLD of the artifact that engine ran (.onnx and .ort share the ONNX figures), with the bench's recommendation."""
    def st(name, kind, **metrics):
        return {"name": name, "kind": kind, "hash": "h", "status": "ran", "seconds": 1.0, "metrics": metrics}

    by_runtime = {"ort-cpu": {"perplexity": 16.1, "perplexity_ratio": 1.06, "kld_mean": 0.064},
                  "llama-cpp": {"perplexity": 16.2, "perplexity_ratio": 1.066, "kld_mean": 0.07}}
    pick = {"runtime": "ort-cpu", "threads": 2, "decode_tok_s": 120.0, "why": "fastest decode at equal quality"}
    stages = [st("01-export", "export"), st("02-quantize", "quantize"), st("03-eval", "eval", by_runtime=by_runtime),
              st("04-bench", "bench", recommended_runtime=pick)]
    run = {"schema_version": 1, "seed": 0, "input": {"model": "smollm2-135m"}, "stages": stages, "total_seconds": 9.0,
           "recipe": "compress-decoder-cpu", "environment": {"python": "3.11", "platform": "Linux", "cpu_count": 2, "versions": {}}}
    decode = dict(case="p32+g32", inputs="decode", ttft_ms=30.0, rounds=3, peak_rss_mb=300.0)
    rows = [{"artifact": "candidate", "runtime": rt, "threads": 2, "p50_ms": 1000 / tok_s, "decode_tok_s": tok_s,
             "size_mb": size, **decode} for rt, tok_s, size in (("ort-cpu", 120.0, 92.5), ("ort-mobile", 110.0, 92.4),
                                                               ("llama-cpp", 100.0, 95.0))]
    bench = {**make_bench(), "cases": [{"kind": "decode", "label": "p32+g32", "batch": 1, "seq_len": 32, "prompt_len": 32, "new_tokens": 32}], "rows": rows, "comparisons": [],
             "artifacts": {"candidate": str(tmp_path / "02-quantize")}}
    (tmp_path / "run.json").write_text(json.dumps(run))
    (tmp_path / "04-bench").mkdir()
    (tmp_path / "04-bench" / "bench.json").write_text(json.dumps(bench))
    md = render_run(tmp_path)[0].read_text()
    table = md.split("## Runtimes")[1].split("\n\n")[1].splitlines()
    assert table[2].startswith("| ort-cpu | 2 | 120.0") and table[2].endswith("| 1.060 | 0.0640 | – | yes |")
    assert "| ort-mobile | 2 | 110.0" in table[3] and "| 1.060 | 0.0640 |" in table[3] and not table[3].endswith("yes |")
    assert "| llama-cpp | 2 | 100.0" in table[4] and "| 1.066 | 0.0700 |" in table[4]
    assert "Recommended: ort-cpu: fastest decode at equal quality" in md
