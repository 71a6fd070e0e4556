"""The headline card and `report --compare` read run.json alone: ship, size vs fp32, speed vs what, the quality
change from the metric vocabulary (new metrics included), parity and gates; several runs side by side."""

import json
import subprocess
import sys

import pytest

from edgelm.core import metrics as vocabulary
from edgelm.core.errors import EdgelmError
from edgelm.deliver.card import card, card_lines
from edgelm.deliver.report import render_compare, render_run

ENV = {"python": "3.11", "platform": "Linux", "cpu_count": 2, "versions": {"torch": "2.13"}}


def stage(name, kind, **metrics):
    return {"name": name, "kind": kind, "hash": "h", "status": "ran", "seconds": 1.0, "metrics": metrics}


def classifier_run(drop=0.6, speedup=2.5, gate_ok=True):
    parity = {"ok": True, "checks": {"label_agreement": {"value": 0.99, "tolerance": 0.9, "ok": True}}, "accuracy": 95.0}
    stages = [stage("01-export", "export", size_mb=90.0, size_mb_by_format={"ort": 90.0, "onnx": 90.1},
                    parity={"onnx": {"cosine": 1.0}, "ort": {"cosine": 1.0}}),
              stage("02-quantize", "quantize", size_mb=10.0, size_mb_float=90.0, compression=9.0, parity=parity,
                    size_mb_by_format={"ort": 10.0}, quantization={"method": "int4"}, parity_torch={"ok": True}),
              stage("03-eval", "eval", runtime="ort-mobile", accuracy=95.0 - drop, reference_accuracy=95.0,
                    accuracy_drop_pt=drop, f1=90.0, reference="input"),
              stage("04-bench", "bench", speedup={"ort-mobile": speedup}, baseline="01-export",
                    p50_ms={"ort-mobile": 1.2})]
    gates = [{"gate": "max_accuracy_drop", "metric": "accuracy_drop_pt", "source": "03-eval", "target": "<= 1 pt",
              "measured": drop, "unit": "pt", "ok": gate_ok}]
    return {"schema_version": 1, "seed": 0, "input": {"model": "minilm-l6"}, "stages": stages, "total_seconds": 4.0,
            "recipe": "demo", "gates": gates, "environment": ENV}


def answers(run):
    return {item.question: (item.answer, item.detail, item.ok) for item in card(run)}


def test_the_card_answers_what_to_ship_how_much_smaller_faster_than_what_at_what_cost_and_verified():
    found = answers(classifier_run())
    assert found["Ship"][0] == "02-quantize/model.ort" and "ort-mobile" in found["Ship"][1]
    assert found["Size"][0] == "9.0× smaller" and "10.0 MB vs 90.0 MB fp32" in found["Size"][1]
    assert found["Speed"][0] == "2.50× faster" and "the float model (01-export) on ort-mobile" in found["Speed"][1]
    assert found["Quality"][0] == "-0.6 pt accuracy" and "accuracy 94.4 pt vs 95.0 pt" in found["Quality"][1]
    assert "accuracy drop" not in found["Quality"][1]  # the drop repeats the pair: left out
    assert found["Verified"][0] == "parity passed (4 checks)" and found["Verified"][2] is True
    assert found["Gates"] == ("all 1 passed", "✓ max_accuracy_drop <= 1 pt: 0.6 pt", True)


def test_misses_are_said_as_misses():
    found = answers(classifier_run(drop=2.0, speedup=0.5, gate_ok=False))
    assert found["Speed"][0] == "2.00× slower" and found["Gates"][0] == "1 of 1 FAILED" and found["Gates"][2] is False
    run = classifier_run()
    run["stages"][1]["metrics"]["parity"]["ok"] = False
    assert answers(run)["Verified"][0] == "parity FAILED (1 of 4)"


def test_a_new_metric_in_the_vocabulary_reaches_the_card_without_report_code(monkeypatch):
    monkeypatch.setitem(vocabulary.VOCABULARY, "kld", vocabulary.Metric("kld", "ratio", "lower", "test KL divergence"))
    run = classifier_run()
    run["stages"][2]["metrics"] = {"runtime": "ort-cpu", "kld": 0.0123}
    assert answers(run)["Quality"][0] == "kld 0.0123"


def test_the_report_opens_with_the_card(tmp_path):
    (tmp_path / "run.json").write_text(json.dumps(classifier_run()))
    md_path, html_path = render_run(tmp_path)
    md, page = md_path.read_text(), html_path.read_text()
    assert md.index("| **Ship** | 02-quantize/model.ort |") < md.index("## Stages")
    assert page.index("class=card") < page.index("<h2>Stages</h2>") and 'class="tile ok"' in page
    assert all(len(line) <= 100 for line in card_lines(classifier_run()))


def write_run(folder, run):
    folder.mkdir()
    (folder / "run.json").write_text(json.dumps(run))
    (folder / "recipe.resolved.yaml").write_text(f"name: demo\nstages:\n- kind: quantize\n  method: "
                                                 f"{run['stages'][1]['metrics']['quantization']['method']}\n")
    return folder


def test_compare_puts_runs_side_by_side_with_the_settings_that_differ(tmp_path):
    other = classifier_run(drop=1.5, speedup=3.0)
    other["stages"][1]["metrics"]["quantization"]["method"] = "int8-dynamic"
    a, b = write_run(tmp_path / "a", classifier_run()), write_run(tmp_path / "b", other)
    html_path, md_path = render_compare([a, b], tmp_path / "cmp.html")
    md = md_path.read_text()
    assert "|  | a | b |" in md and "| Speed | 2.50× faster" in md and "| 3.00× faster" in md
    assert "| stages.01-quantize.method | int4 | int8-dynamic |" in md and "| name |" not in md
    assert "<table class=cmp>" in html_path.read_text()
    with pytest.raises(EdgelmError, match="not an edgelm run folder"):
        render_compare([a, tmp_path / "missing"], tmp_path / "x.html")


def test_compare_cli_bad_folder_is_one_line_exit_2(tmp_path):
    a = write_run(tmp_path / "a", classifier_run())
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "run.json").write_text("{not json")
    done = subprocess.run([sys.executable, "-m", "edgelm", "report", "--compare", str(a), str(tmp_path / "broken"),
                           "-o", str(tmp_path / "c.html")], capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "broken" in done.stderr


def test_several_candidates_in_the_run_json_get_a_pareto_plot(tmp_path):
    run = classifier_run()
    run["candidates"] = [{"name": f"trial {i}", "accuracy": acc, "p50_ms": ms, "size_mb": mb}
                         for i, (acc, ms, mb) in enumerate([(95.0, 4.0, 90.0), (94.0, 2.0, 23.0), (90.0, 3.0, 10.0)])]
    (tmp_path / "run.json").write_text(json.dumps(run))
    page = render_run(tmp_path)[1].read_text()
    assert "<h2>Candidates: accuracy vs latency</h2>" in page and "<!-- Pareto front -->" in page
    run.pop("candidates")
    (tmp_path / "run.json").write_text(json.dumps(run))
    assert "Candidates:" not in render_run(tmp_path)[1].read_text()  # one artifact: nothing to trade off


def test_pareto_plot_reads_the_better_direction_from_the_vocabulary():
    from edgelm.measure.plots import front_of, pareto_plot

    points = [{"name": "a", "p50_ms": 1.0, "perplexity": 20.0}, {"name": "b", "p50_ms": 2.0, "perplexity": 15.0},
              {"name": "c", "p50_ms": 3.0, "perplexity": 30.0}]
    svg = pareto_plot(points, "t", y="perplexity", size=None)
    assert svg.startswith("<svg") and "<!-- perplexity -->" in svg
    assert front_of(points, "p50_ms", "perplexity") == [0, 1]  # lower perplexity is better: c is beaten
    as_accuracy = [{"p50_ms": p["p50_ms"], "accuracy": p["perplexity"]} for p in points]
    assert front_of(as_accuracy, "p50_ms", "accuracy") == [0, 2]  # higher accuracy is better: b is beaten
    assert pareto_plot([{"name": "a", "p50_ms": 1.0}], "t") is None


def test_a_peer_runtime_in_the_bench_is_compared_on_the_speed_answer():
    rows = [{"artifact": "candidate", "runtime": rt, "threads": 1, "case": "c", "p50_ms": ms}
            for rt, ms in (("ort-mobile", 2.0), ("llama-cpp", 3.0))]
    bench = {"cases": [{"label": "c"}], "rows": rows}
    speed = answers_with(classifier_run(), {"04-bench": bench})["Speed"]
    assert "p50 2.000 ms" in speed[1] and "1.50× faster than on llama-cpp" in speed[1]


def answers_with(run, benches):
    return {item.question: (item.answer, item.detail) for item in card(run, benches)}
