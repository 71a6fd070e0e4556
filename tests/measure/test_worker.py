"""The worker's measuring logic in-process (the subprocess path is covered by test_suite): decoder figures,
per-case skips, and failures written as JSON instead of crashing."""

import json

from edgelm.measure import worker
from edgelm.measure.inputs import decode_case, fixed_case, save_cases
from edgelm.runtimes.base import resolve_target
from edgelm.models.loading import load_tokenizer

BUDGET = {"warmup": 1, "min_repeats": 3, "max_repeats": 50, "seconds": 0.1, "rel_tol": 0.02}


def spec_for(folder, cases, tmp_path, runtime="torch-cpu", **extra):
    described = save_cases(cases, tmp_path / "feeds.npz")
    return {"runtime": runtime, "threads": 1, "target": resolve_target(folder).to_json(), "feeds": str(tmp_path / "feeds.npz"),
            "cases": described, "budget": BUDGET, **extra}


def test_decoder_generation_figures(tiny_model, tmp_path):
    folder = tiny_model("llama", "causal-lm")
    result = worker.run_spec(spec_for(folder, [decode_case(load_tokenizer(folder), 5, 6)], tmp_path))
    row = result["results"][0]
    assert result["threads"] == 1 and result["load_ms"] > 0 and result["first_ms"] > 0
    assert row["generations"] >= 3 and len(row["times_ms"]) == row["generations"] * 5 == row["n"]
    assert len(row["ttft_runs_ms"]) == row["generations"]
    assert row["decode_tok_s"] > 0 and row["prefill_tok_s"] > 0 and row["ttft_ms"] > 0


def test_encoder_cannot_generate_is_a_skip_not_a_crash(tiny_model, tmp_path):
    folder = tiny_model("bert", "sequence-classification")
    tok = load_tokenizer(folder)
    result = worker.run_spec(spec_for(folder, [fixed_case(tok, 1, 8), decode_case(tok, 4, 3)], tmp_path))
    fixed, decode = result["results"]
    assert fixed["n"] >= 3 and fixed["p50_ms"] > 0
    assert "skipped" in decode and "generat" in decode["skipped"]


def test_interleaved_spec_gives_ratios(tiny_model, tmp_path):
    folder = tiny_model("bert", "sequence-classification")
    spec = spec_for(folder, [fixed_case(load_tokenizer(folder), 2, 8)], tmp_path)
    spec["baseline"] = spec["target"]
    row = worker.run_spec(spec)["results"][0]
    assert row["ratio"]["n"] >= 3 and row["baseline_p50_ms"] > 0 and row["candidate_p50_ms"] > 0


def test_main_writes_error_json(tiny_model, tmp_path):
    spec = spec_for(tiny_model("bert", "sequence-classification"), [fixed_case(load_tokenizer(tiny_model("bert")), 1, 8)],
                    tmp_path, runtime="ort-cpu")  # a plain HF folder has no model.onnx
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    assert worker.main([str(tmp_path / "spec.json"), str(tmp_path / "out.json")]) == 0
    out = json.loads((tmp_path / "out.json").read_text())
    assert "no model.onnx" in out["error"] and out["peak_rss_mb"] > 0


def lookup_prompts(tmp_path):
    rows = ["the movie was good and the acting was good and the movie was", "one two three one two three one two",
            "i love this film , i love this story , i love"]
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"task": "repeat", "prompt": p}) + "\n" for p in rows))
    return path


def test_speculative_case_rows_greedy_and_lookup(tiny_model, tmp_path):
    from edgelm.measure.inputs import lookup_case
    from edgelm.models.speculative import LookupSettings
    from tests.measure.exports import export_folder

    folder = export_folder(tiny_model("llama", "causal-lm"), tmp_path / "export", ("onnx",))
    case = lookup_case(load_tokenizer(folder), 12, LookupSettings(draft_tokens=4).as_dict(), str(lookup_prompts(tmp_path)))
    result = worker.run_spec(spec_for(folder, [case], tmp_path, runtime="ort-cpu"))
    greedy, lookup = result["results"][0]["decodings"]
    assert greedy["decoding"] == "greedy" and lookup["decoding"] == "lookup"
    assert lookup["tokens_identical"] is True and lookup["mismatched_prompts"] == []
    assert greedy["generated_tokens"] == lookup["generated_tokens"] > 3
    assert lookup["target_calls"] <= lookup["generated_tokens"] - 3  # one call per generated token at most
    assert lookup["drafted_tokens"] >= lookup["accepted_tokens"] and 0 <= lookup["acceptance_rate"] <= 1
    assert lookup["draft_tokens"] == 4 and lookup["speculative_speedup"] > 0 and greedy["decode_tok_s"] > 0


def test_speculative_case_without_the_onnx_graph_is_a_skipped_lookup_row(tiny_model, tmp_path):
    from edgelm.measure.inputs import lookup_case
    from edgelm.models.speculative import LookupSettings

    folder = tiny_model("llama", "causal-lm")
    case = lookup_case(load_tokenizer(folder), 6, LookupSettings().as_dict(), str(lookup_prompts(tmp_path)))
    greedy, lookup = worker.run_spec(spec_for(folder, [case], tmp_path))["results"][0]["decodings"]
    assert greedy["decode_tok_s"] > 0 and "KV-cache graph" in lookup["skipped"]
