"""The bench stage: speedup against a named baseline in the key gates read, reports written beside bench.json."""

import json

import pytest

from edgelm.core.errors import EdgelmError
from edgelm.core.records import StageRecord
from edgelm.models.loading import load_bundle
from edgelm.pipeline.gates import evaluate_gates
from edgelm.pipeline.recipe import Gates
from edgelm.core.stage import StageContext
from edgelm.stages.bench import BenchConfig, BenchStage

FAST = {"runtimes": ["ort-cpu", "executorch"], "shapes": ["1x8"], "seconds": 0.2}


def context(tmp_path, initial=None):
    (tmp_path / "w").mkdir()
    return StageContext(workdir=tmp_path / "w", run_dir=tmp_path, initial_bundle=(lambda: initial) if initial else None)


def test_speedup_against_named_folder_feeds_the_gate(tiny_export, tmp_path):
    bundle = load_bundle(tiny_export, load_model=False)
    result = BenchStage().run(bundle, BenchConfig(**FAST, baseline=str(tiny_export)), context(tmp_path))
    metrics = result.metrics
    assert set(metrics["speedup"]) == {"ort-cpu"} and metrics["speedup"]["ort-cpu"] > 0
    assert "no model.pte" in metrics["skipped"]["executorch"] and metrics["p50_ms"]["ort-cpu"] > 0
    assert sorted(f.name for f in result.files) == ["bench.html", "bench.json", "bench.md"]
    bench = json.loads((tmp_path / "w" / "bench.json").read_text())
    assert bench["baseline"] == f"baseline:{tiny_export.name}" and bench["speedup"] == metrics["speedup"]
    stage = StageRecord(name="03-bench", kind="bench", hash="h", status="ran", seconds=1.0, metrics=metrics)
    gate = evaluate_gates(Gates(min_speedup={"value": 0.01, "runtime": "ort-cpu"}), [stage])
    assert gate[0].measured == metrics["speedup"]["ort-cpu"] and gate[0].ok and gate[0].source == "03-bench"
    other = evaluate_gates(Gates(min_speedup={"value": 0.01, "runtime": "ort-cpu", "baseline": "source"}), [stage])
    assert not other[0].ok and other[0].note == f"03-bench compared against {tiny_export}, not source"
    json.dumps(metrics)


def test_source_baseline_is_exported_like_the_candidate(tiny_export, tiny_model, tmp_path):
    from edgelm.models.loading import load_model

    bundle = load_bundle(tiny_export, load_model=False)
    source = load_model(str(tiny_model("bert", "sequence-classification")))
    config = BenchConfig(**{**FAST, "runtimes": ["ort-cpu"]}, baseline="source")
    result = BenchStage().run(bundle, config, context(tmp_path, source))
    assert "ort-cpu" in result.metrics["speedup"]


def test_unknown_baseline_is_a_user_error(tiny_export, tmp_path):
    bundle = load_bundle(tiny_export, load_model=False)
    with pytest.raises(EdgelmError, match="bench.baseline: 'nope'"):
        BenchStage().run(bundle, BenchConfig(**FAST, baseline="nope"), context(tmp_path))


def test_accuracy_from_an_earlier_eval_stage(tmp_path):
    from edgelm.stages.bench import known_accuracy

    ctx = context(tmp_path)
    ctx.previous = {"01-export": {"size_mb": 1.0}, "02-eval": {"accuracy": 90.0, "reference_accuracy": 92.0}}

    class Source:
        name = "source"

    assert known_accuracy(ctx, Source()) == {"candidate": 90.0, "source": 92.0}
    assert known_accuracy(ctx, None) == {"candidate": 90.0}
    ctx.previous = {}
    assert known_accuracy(ctx, None) == {}


def test_headline_p50_is_the_candidates_not_the_interleaved_baselines():
    from edgelm.stages.bench import headline_metrics

    rows = [{"artifact": "source", "runtime": "ort-cpu", "p50_ms": 9.0},
            {"artifact": "candidate", "runtime": "ort-cpu", "p50_ms": 3.0},
            {"artifact": "source", "runtime": "ort-mobile", "threads": 2, "p50_ms": 8.0},
            {"artifact": "candidate", "runtime": "ort-mobile", "threads": 2, "p50_ms": 4.0}]
    metrics = headline_metrics({"rows": rows, "speedup": {"ort-cpu": 3.0}})
    assert metrics["p50_ms"] == {"ort-cpu": 3.0, "ort-mobile@2t": 4.0}


def test_decoders_are_not_timed_on_dataset_sentences(tmp_path):
    """A decoder's eval data is a corpus (perplexity), not sentences to time: the stage does not default to it,
    and asking for it explicitly is one clear error rather than a skipped row."""
    from types import SimpleNamespace

    from edgelm.measure.suite import BenchSettings, build_cases
    from edgelm.data.readers import DataConfig
    from edgelm.stages.bench import pick_data

    text = tmp_path / "valid.txt"
    text.write_text("some text\n")
    ctx = SimpleNamespace(eval_data=DataConfig(path=str(text)), data=None)
    assert pick_data(BenchConfig(), ctx, "causal-lm") is None
    assert pick_data(BenchConfig(), ctx, "sequence-classification") == str(text)
    decoder = SimpleNamespace(task="causal-lm", tokenizer_dir=None, path=tmp_path)
    with pytest.raises(EdgelmError, match="decoders are timed by prompt and generation lengths"):
        build_cases(decoder, BenchSettings(runtimes=["ort-cpu"], data=str(text)))


def test_stock_int8_reference_is_interleaved_beside_the_baseline(tiny_export, tiny_model, tmp_path):
    """bench.stock builds the stock toolchain's int8 model (ORT transformers optimizer + per-tensor
    quantize_dynamic) and reports the candidate's speedup against it next to the usual baseline."""
    import onnx

    from edgelm.models.loading import load_model

    bundle = load_bundle(tiny_export, load_model=False)
    source = load_model(str(tiny_model("bert", "sequence-classification")))
    config = BenchConfig(**{**FAST, "runtimes": ["ort-cpu"]}, baseline=str(tiny_export), stock=True)
    metrics = BenchStage().run(bundle, config, context(tmp_path, source)).metrics
    assert metrics["speedup_vs_stock"]["ort-cpu"] > 0 and "speedup" in metrics and "quantize_dynamic" in metrics["stock_recipe"]
    bench = json.loads((tmp_path / "w" / "bench.json").read_text())
    assert set(bench["speedup_by_baseline"]) == {f"baseline:{tiny_export.name}", "stock-int8"}
    ops = {n.op_type for n in onnx.load(str(tmp_path / "w" / "stock-int8" / "model.onnx")).graph.node}
    assert "MatMulInteger" in ops or "QAttention" in ops  # quantized by the stock quantizer
    assert bench["stock_op_counts"] and "bench: stock-int8" not in json.dumps(bench["speedup_skipped"] if "speedup_skipped" in bench else "")


def test_stock_int8_as_the_baseline(tiny_export, tiny_model, tmp_path):
    from edgelm.models.loading import load_model

    bundle = load_bundle(tiny_export, load_model=False)
    source = load_model(str(tiny_model("bert", "sequence-classification")))
    config = BenchConfig(**{**FAST, "runtimes": ["ort-cpu"]}, baseline="stock-int8")
    metrics = BenchStage().run(bundle, config, context(tmp_path, source)).metrics
    assert metrics["speedup"] == metrics["speedup_vs_stock"] and metrics["speedup"]["ort-cpu"] > 0


def test_speed_verdict_says_slower_than_the_baseline():
    from edgelm.stages.bench import speed_verdict

    line = speed_verdict({"speedup": {"ort-mobile": 0.89}, "speedup_vs_stock": {"ort-mobile": 1.13}}, "03-quantize")
    assert "1.13x the stock toolchain" in line and "SLOWER than 03-quantize" in line
    assert "SLOWER" not in speed_verdict({"speedup": {"ort-mobile": 1.4}}, "03-quantize")


def test_speculative_lookup_is_measured_beside_greedy_on_a_decoder(tiny_model, tmp_path):
    from tests.measure.exports import export_folder

    folder = export_folder(tiny_model("llama", "causal-lm"), tmp_path / "export", ("onnx",))
    bundle = load_bundle(folder, load_model=False)
    config = BenchConfig(runtimes=["ort-cpu"], new_tokens=8, seconds=0.2, baseline="none", speculative="lookup",
                         draft_tokens=4)
    metrics = BenchStage().run(bundle, config, context(tmp_path)).metrics
    spec = metrics["speculative"]
    assert spec["method"] == "lookup" and spec["draft_tokens"] == 4 and spec["runtime"] == "ort-cpu"
    assert spec["tokens_identical"] is True and spec["helps"] == (spec["speculative_speedup"] > 1.0)
    assert spec["prompt_set"] == "lookup-prompts.jsonl" and 0 <= spec["acceptance_rate"] <= 1
    rows = json.loads((tmp_path / "w" / "bench.json").read_text())["rows"]
    assert [r["decoding"] for r in rows if "decoding" in r] == ["greedy", "lookup"]
    assert "greedy vs lookup" in (tmp_path / "w" / "bench.md").read_text()


@pytest.mark.parametrize("speedup, identical, helps", [(1.8, True, True), (0.9, True, False), (1.8, False, False)])
def test_lookup_helps_only_when_faster_with_identical_tokens(speedup, identical, helps):
    from edgelm.stages.bench import speculative_metrics

    spec = {"method": "lookup", "draft_tokens": 8, "ngram_max": 3, "ngram_min": 1}
    rows = [{"artifact": "source", "runtime": "ort-cpu", "decoding": "lookup", "speculative_speedup": 5.0},
            {"artifact": "candidate", "runtime": "ort-cpu", "decoding": "greedy", "decode_tok_s": 10.0},
            {"artifact": "candidate", "runtime": "ort-cpu", "decoding": "lookup", "speculative": spec, "source": "p.jsonl",
             "speculative_speedup": speedup, "tokens_identical": identical, "acceptance_rate": 0.5, "decode_tok_s": 18.0}]
    out = speculative_metrics({"rows": rows})["speculative"]
    assert out["helps"] is helps and out["speculative_speedup"] == speedup and out["draft_tokens"] == 8
    assert speculative_metrics({"rows": rows[:2]}) == {}
