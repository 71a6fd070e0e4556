"""The metric vocabulary: one entry per key that stages, run.json, manifests and bench rows report, with its unit,
its meaning and which direction is better. A key means one thing everywhere; docs/metrics.md is generated from
this table (`python -m edgelm.core.metrics > docs/metrics.md`) and a test keeps both in step with what stages write.

Units: accuracy-like figures are percentage points, sizes are MB = 10^6 bytes, latencies ms, durations s.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable, Literal

UNITS = {
    "pt": "percentage points (0–100)",
    "MB": "megabytes, 10^6 bytes",
    "ms": "milliseconds",
    "s": "seconds",
    "tok/s": "tokens per second",
    "x": "a factor (times)",
    "ratio": "a number without unit: a fraction 0–1, a ratio of two like figures, a cosine, a perplexity, a loss",
    "count": "a whole number of things (examples, parameters, tokens, steps)",
    "text": "not a quantity: a name, a setting or a list of names",
    "table": "not a quantity: a nested mapping or list whose figures its meaning describes",
}
SHOWN = {"pt": " pt", "MB": " MB", "ms": " ms", "s": " s", "tok/s": " tok/s", "x": "×"}  # printed after a value


@dataclass(frozen=True)
class Metric:
    name: str
    unit: str
    better: Literal["higher", "lower"] | None
    meaning: str
    label: str | None = None  # short column title; default: the name without its unit suffix

    def title(self) -> str:
        """Column header: short label plus unit, e.g. `p50 ms`, `size MB`."""
        base = self.label or self.name.removesuffix(UNIT_SUFFIX.get(self.unit, "")).replace("_", " ")
        return base + (SHOWN[self.unit] if self.unit in UNIT_SUFFIX else "")


UNIT_SUFFIX = {"pt": "_pt", "ms": "_ms", "MB": "_mb", "tok/s": "_tok_s", "s": "_seconds"}  # units a title shows

H, L = "higher", "lower"
_ENTRIES = [
    # quality (eval, finetune, distill, quantize)
    Metric("accuracy", "pt", H, "share of labelled examples the model labels right"),
    Metric("f1", "pt", H, "macro-F1 over the labels seen"),
    Metric("recall_by_label", "pt", H, "{label name: share of that label's examples the model labels right}"),
    Metric("kappa", "ratio", H, "quadratic weighted kappa (ordinal integer labels only): 1 = perfect, 0 = chance"),
    Metric("confusion_matrix", "table", None, "{labels: names in id order, counts: [true label][predicted label] "
           "example counts}"),
    Metric("reference_accuracy", "pt", H, "accuracy of the eval reference model on the same examples"),
    Metric("accuracy_drop_pt", "pt", L, "reference accuracy minus candidate accuracy (decoders: the ICL accuracy drop)"),
    Metric("eval_accuracy", "pt", H, "accuracy on the held-out split at the best training evaluation"),
    Metric("zero_shot_accuracy", "pt", H, "label-word accuracy of a decoder before fine-tuning"),
    Metric("teacher_eval_accuracy", "pt", H, "the distillation teacher's accuracy on the held-out split"),
    Metric("icl_accuracy", "pt", H, "k-shot in-context accuracy of a decoder (the label whose whole word sequence is most probable)"),
    Metric("icl_data", "text", None, "which data the in-context probe scored: a path (and where its demos came from) or the built-in sentiment probe"),
    Metric("icl_template", "text", None, "the in-context probe's prompt per example ({text}, then {label})"),
    Metric("icl_suite", "table", None, "{task: greedy exact-match accuracy in pt} on the built-in in-context suite"),
    Metric("icl_suite_accuracy", "pt", H, "mean accuracy over the built-in in-context suite's tasks"),
    Metric("reference_icl_suite", "table", None, "{task: accuracy in pt} of the eval reference model on the in-context suite"),
    Metric("reference_icl_suite_accuracy", "pt", H, "the eval reference model's mean in-context suite accuracy"),
    Metric("icl_suite_drops", "table", None, "{task: reference minus candidate accuracy in pt} on the in-context suite"),
    Metric("icl_suite_drop_pt", "pt", L, "reference minus candidate mean in-context suite accuracy"),
    Metric("icl_f1", "pt", H, "macro-F1 of the in-context probe"),
    Metric("reference_icl_accuracy", "pt", H, "in-context accuracy of the eval reference model"),
    Metric("icl_drop_pt", "pt", L, "reference ICL accuracy minus candidate ICL accuracy"),
    Metric("icl_k", "count", None, "demonstrations per in-context prompt"),
    Metric("perplexity", "ratio", L, "sliding-window perplexity of the eval text"),
    Metric("reference_perplexity", "ratio", L, "perplexity of the eval reference model on the same text"),
    Metric("perplexity_ratio", "ratio", L, "candidate perplexity / reference perplexity"),
    Metric("kld_mean", "ratio", L, "mean KL divergence (nats) of the candidate's next-token distribution from the reference's, over the perplexity windows' tokens"),
    Metric("kld_p99", "ratio", L, "99th percentile over tokens of that KL divergence (nats)"),
    Metric("top1_agreement", "ratio", H, "share of tokens (0–1) where candidate and reference predict the same next token"),
    Metric("kld_tokens", "count", None, "tokens the KL divergence was measured on"),
    Metric("eval_perplexity", "ratio", L, "exp(held-out loss) of a fine-tuned language model"),
    Metric("eval_loss", "ratio", L, "held-out loss at the best training evaluation"),
    Metric("tokens", "count", None, "tokens scored for perplexity"),
    Metric("window", "count", None, "perplexity: tokens of context per window"),
    Metric("stride", "count", None, "perplexity: tokens the window advances"),
    Metric("fidelity_cosine_mean", "ratio", H, "mean cosine between candidate and reference sentence embeddings"),
    Metric("fidelity_cosine_min", "ratio", H, "smallest such cosine"),
    Metric("fidelity_cosine_p05", "ratio", H, "5th percentile of such cosines"),
    Metric("greedy_token_match", "ratio", H, "share of greedy tokens equal to the reference's"),
    Metric("greedy_exact", "ratio", H, "share of prompts whose greedy continuation equals the reference's"),
    Metric("greedy_prefix_mean", "count", H, "mean tokens before the first greedy difference"),
    Metric("greedy_samples", "table", None, "up to three prompts with the candidate's and the reference's continuations"),
    Metric("max_new_tokens", "count", None, "greedy tokens generated per prompt for generation parity"),
    Metric("n", "count", None, "measurements behind a figure: examples scored (eval) or timed runs (bench rows)"),
    Metric("label_words", "text", None, "the word for label 0, 1, ... in the in-context probe"),
    Metric("reference", "text", None, "what eval compared with: a stage folder, input or none"),
    Metric("runtime", "text", None, "where the candidate ran (torch, ort-cpu, ...)"),
    Metric("by_runtime", "table", None, "{runtime: eval figures} for every runtime evaluated; the first feeds the gates"),
    Metric("eval_data", "text", None, "where the labelled eval examples came from"),
    Metric("artifact", "text", None, "file (eval) or bench target name (bench rows) that was measured"),
    Metric("artifact_format", "text", None, "format of the evaluated artifact: onnx, ort or pte"),
    # size and parameters
    Metric("size_mb", "MB", L, "the files the shipped artifact needs on disk: model.ort, else model.onnx with its "
           "external data, else model.pte (bench rows: the files that runtime loads)", "size"),
    Metric("size_mb_by_format", "table", None, "{format: MB} of the files of every artifact format in the folder"),
    Metric("size_mb_float", "MB", None, "size_mb of the float model a quantize stage started from (same format)", "float size"),
    Metric("size_mb_fp32", "MB", None, "size_mb_float of the run's first quantize stage (the fp32 export)", "fp32 size"),
    Metric("smaller_than_fp32", "x", H, "size_mb_fp32 / size_mb of the shipped artifact"),
    Metric("compression", "x", H, "size_mb_float / size_mb of a quantize stage"),
    Metric("param_mb", "MB", L, "parameter memory at fp32: parameters × 4 bytes / 10^6 (not a file size)", "fp32 params"),
    Metric("params", "count", None, "parameters of the stage's torch model"),
    Metric("reference_params", "count", None, "parameters of the eval reference model"),
    Metric("teacher_params", "count", None, "parameters of the distillation teacher"),
    Metric("params_before", "count", None, "parameters before the stage"),
    Metric("params_after", "count", None, "parameters after the stage"),
    Metric("param_reduction", "ratio", H, "1 - params_after / params_before"),
    Metric("trainable_params", "count", None, "parameters the fine-tune trained"),
    Metric("vocab_before", "count", None, "vocab-prune: token pieces before"),
    Metric("vocab_after", "count", L, "vocab-prune: token pieces kept (specials, single characters, the data's, reserve)"),
    Metric("texts_scanned", "count", None, "vocab-prune: texts whose pieces were kept"),
    Metric("params_removed", "count", None, "vocab-prune: embedding-table parameters removed"),
    Metric("vocab_check", "table", None, "vocab-prune: {texts, pieces_equal, max_abs_diff} before vs after on the data's texts"),
    # speed
    Metric("speedup", "x", H, "{runtime: baseline p50 / candidate p50} from interleaved pairs in one bench"),
    Metric("p50_ms", "ms", L, "median latency per call (bench stage: {runtime: ms} of the candidate's first case)"),
    Metric("p90_ms", "ms", L, "90th-percentile latency per call"),
    Metric("p99_ms", "ms", L, "99th-percentile latency per call"),
    Metric("mean_ms", "ms", L, "mean latency per call"),
    Metric("std_ms", "ms", L, "standard deviation of the latency per call"),
    Metric("import_ms", "ms", L, "time to import the runtime in a fresh process"),
    Metric("load_ms", "ms", L, "time to load the model"),
    Metric("first_ms", "ms", L, "latency of the first call after loading"),
    Metric("ttft_ms", "ms", L, "time to the first generated token", "TTFT"),
    Metric("prefill_tok_s", "tok/s", H, "prompt tokens processed per second"),
    Metric("decode_tok_s", "tok/s", H, "tokens generated per second after the first"),
    Metric("decoding", "text", None, "decoder bench rows: how the tokens were generated (greedy, or lookup: "
           "prompt-lookup speculative decoding, greedy-exact)"),
    Metric("generated_tokens", "count", None, "tokens generated over the bench prompt set (one pass, the first included)",
           "tokens"),
    Metric("decode_tok_s_per_pass", "table", None, "decode_tok_s of each timed pass over the bench prompt set"),
    Metric("target_calls", "count", None, "speculative decoding: calls of the target model after the prefill"),
    Metric("drafted_tokens", "count", None, "speculative decoding: draft tokens the target verified"),
    Metric("accepted_tokens", "count", None, "speculative decoding: draft tokens the target agreed with"),
    Metric("acceptance_rate", "ratio", H, "speculative decoding: accepted_tokens / drafted_tokens", "acceptance"),
    Metric("tokens_per_call", "ratio", H, "speculative decoding: tokens generated per target call (1 = plain greedy)",
           "tok/call"),
    Metric("speculative_speedup", "x", H, "speculative decoding: greedy decode time / speculative decode time over "
           "the same prompts (median of interleaved passes)", "spec speedup"),
    Metric("tokens_identical", "text", None, "speculative decoding: whether every prompt's tokens equal plain "
           "greedy's, token by token (true/false)", "identical"),
    Metric("mismatched_prompts", "table", None, "speculative decoding: indices of prompts whose tokens differ from greedy"),
    Metric("draft_tokens", "count", None, "speculative decoding: most tokens drafted per step"),
    Metric("ngram_max", "count", None, "prompt-lookup drafting: longest n-gram looked up in the context"),
    Metric("ngram_min", "count", None, "prompt-lookup drafting: shortest n-gram looked up in the context"),
    Metric("speculative", "table", None, "decoder bench: {method, draft settings, runtime, acceptance_rate, "
           "speculative_speedup, tokens_identical, helps, prompt_set}: prompt-lookup decoding measured on the prompt "
           "set; helps = faster than greedy with identical tokens (the bundle then decodes with it)"),
    Metric("peak_rss_mb", "MB", L, "peak resident memory: of the timing process (bench rows), or of the edgelm "
           "process during one stage (run.json / metrics.json stage records, beside `seconds`)", "peak RSS"),
    Metric("recommended_runtime", "table", None, "decoder bench: {runtime, why}: the fastest decode among the runtimes "
           "whose artifact's perplexity is within 2% of the best"),
    Metric("threads", "count", None, "intra-op threads (bench rows) or torch threads (training)"),
    Metric("rounds", "count", None, "bench rows: interleaved rounds (a fresh worker each) whose median the row reports"),
    Metric("by_round", "table", None, "bench rows: {p50_ms / decode_tok_s / ttft_ms: the figure of each round}"),
    Metric("baseline", "text", None, "what the bench compared against: source, a stage folder, a path or none"),
    Metric("skipped", "text", None, "{runtime: why it was not timed}"),
    Metric("speedup_skipped", "text", None, "why no speedup was measured"),
    Metric("speedup_vs_stock", "x", H, "{runtime: stock-int8 p50 / candidate p50} from interleaved pairs in the same bench"),
    Metric("speed_verdict", "text", None, "one line: the candidate's speed vs the stock int8 and the bench baseline, SLOWER when below the baseline"),
    Metric("stock_recipe", "text", None, "the stock toolchain's calls that built the stock-int8 reference"),
    Metric("bench_json", "text", None, "the bench stage's full results file"),
    # time
    Metric("seconds", "s", None, "wall time of a stage"),
    Metric("total_seconds", "s", None, "wall time of all stages of a run"),
    Metric("train_seconds", "s", None, "wall time of training"),
    Metric("train_cpu_seconds", "s", None, "CPU time of training (all threads)"),
    Metric("export_seconds", "s", None, "wall time of the ONNX export"),
    Metric("optimize_seconds", "s", None, "wall time of the ONNX graph fusions"),
    # training
    Metric("method", "text", None, "the stage's method setting (finetune: lora/prompt/ia3/adapter/full; lowrank: activation/svd)"),
    Metric("task", "text", None, "the output model's task"),
    Metric("samples", "count", None, "examples trained on"),
    Metric("eval_samples", "count", None, "held-out examples evaluated during training"),
    Metric("steps", "count", None, "optimizer steps"),
    Metric("precision", "text", None, "training precision: fp32, bf16 or fp16"),
    Metric("resumed_from_step", "count", None, "checkpoint step training resumed from (none: a fresh start)"),
    Metric("export_max_abs_diff", "ratio", L, "largest absolute logit difference between the merged model and the trained one"),
    Metric("teacher", "text", None, "the distillation teacher: a MODEL, a stage folder or input"),
    Metric("layer_map", "text", None, "teacher layer for each student layer"),
    Metric("student", "text", None, "the distillation student kind (bilstm: a new embedding + BiLSTM classifier)"),
    Metric("augmented_samples", "count", None, "teacher-labelled augmented texts a student trained on besides the data"),
    Metric("vocab_kept", "count", None, "embedding rows a student kept (tokens of the training data + specials + UNK)"),
    Metric("loss_terms", "table", None, "{term: value} of the distillation loss at the last step"),
    # structure
    Metric("importance", "text", None, "pruning importance score"),
    Metric("scope", "text", None, "pruning scope: uniform or global"),
    Metric("layers", "table", None, "per-layer rows: kept heads / FFN neurons (prune), ranks and errors (lowrank)"),
    Metric("sparsity", "table", None, "zeroed-weight shares per layer and overall (fractions 0–1)"),
    Metric("factorized", "count", None, "layers factorized"),
    Metric("not_factorized", "count", None, "layers left whole because their rank would not save parameters"),
    # export and quantize
    Metric("formats", "text", None, "artifact formats the export wrote"),
    Metric("parity", "table", None, "{format: artifact vs torch figures} (quantize: float vs quantized figures; "
           "accuracy and accuracy_float in pt)"),
    Metric("parity_torch", "table", None, "the quantized ONNX artifact against its torch source"),
    Metric("quantization", "table", None, "method, settings and quantized op counts"),
    Metric("sensitivity", "table", None, "per-layer-group SQNR (dB) and, with labels, accuracy kept float (pt)"),
    Metric("auto", "table", None, "auto mode: groups kept float step by step with accuracy and drop (pt)"),
    Metric("pte", "table", None, "the torch-side quantized .pte: scheme, size_mb, parity"),
    Metric("ort_skipped", "text", None, "why the quantized .ort was not re-converted"),
]
VOCABULARY: dict[str, Metric] = {m.name: m for m in _ENTRIES}


def metric(name: str) -> Metric | None:
    return VOCABULARY.get(name)


def unit(name: str) -> str | None:
    entry = VOCABULARY.get(name)
    return entry.unit if entry else None


def shown_unit(name: str) -> str:
    """What follows a value of `name` in text: ' pt', ' MB', '×', or nothing."""
    return SHOWN.get(unit(name) or "", "")


def with_unit(name: str, value, fmt=str) -> str:
    """A value of `name` as text with its unit: `23.4 MB`, `2.1×`; a {runtime: value} map as `ort-cpu 2.1×, ...`."""
    suffix = shown_unit(name)
    if isinstance(value, dict):
        return ", ".join(f"{k} {fmt(v)}{suffix}" for k, v in value.items())
    return f"{fmt(value)}{suffix}" if isinstance(value, (int, float)) and not isinstance(value, bool) else fmt(value)


def units_of(keys: Iterable[str]) -> dict[str, str]:
    """{key: unit} for the declared keys among `keys`."""
    return {k: VOCABULARY[k].unit for k in keys if k in VOCABULARY}


def reported_keys(metrics: dict) -> set[str]:
    """The metric keys of a stage's metrics: its own and those of each `by_runtime` entry (eval figures again)."""
    inner = [k for figures in (metrics.get("by_runtime") or {}).values() for k in figures]
    return set(metrics) | set(inner)


def undeclared(keys: Iterable[str]) -> list[str]:
    return sorted({k for k in keys if k not in VOCABULARY})


def files_mb(paths: Iterable[str | os.PathLike]) -> float:
    """Size of files on disk in MB (10^6 bytes), the unit of every `size_mb`."""
    return round(sum(os.path.getsize(p) for p in paths) / 1e6, 3)


def param_mb(params: int) -> float:
    """fp32 parameter memory in MB (10^6 bytes)."""
    return round(params * 4 / 1e6, 2)


def markdown() -> str:
    """docs/metrics.md: the units, then one row per key."""
    lines = ["# Metric vocabulary", "", "Generated from `edgelm/core/metrics.py` (`python -m edgelm.core.metrics > "
             "docs/metrics.md`); every key a stage, `run.json`, `metrics.json`, `manifest.json` or a bench row reports "
             "is listed once, with one unit.", "", "| unit | meaning |", "|---|---|"]
    lines += [f"| {u} | {meaning} |" for u, meaning in UNITS.items()]
    lines += ["", "| key | unit | better | meaning |", "|---|---|---|---|"]
    lines += [f"| `{m.name}` | {m.unit} | {m.better or ''} | {m.meaning} |" for m in sorted(_ENTRIES, key=lambda m: m.name)]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
