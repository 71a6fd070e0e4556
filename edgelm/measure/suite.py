"""Orchestrates a benchmark: inputs built once, one fresh worker process per (artifact, runtime, threads),
then interleaved baseline-vs-candidate workers for speedups. Returns the bench JSON (the source of truth)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from edgelm.measure import timing
from edgelm.models.plain import MODULE_TASK
from edgelm.measure.inputs import Case, data_case, decode_case, fixed_case, lookup_case, parse_shape, save_cases
from edgelm.measure.machine import library_versions, machine_info
from edgelm.measure.worker import packed
from edgelm.runtimes.base import RUNTIMES, Target, artifact_size_mb, unavailable
from edgelm.core.errors import EdgelmError
from edgelm.core.ui import info

BENCH_SCHEMA = 1
ROW_KEYS = ("import_ms", "load_ms", "first_ms", "peak_rss_mb")


class BenchSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    runtimes: list[str] = Field(default_factory=lambda: ["torch-cpu", "ort-cpu"])
    threads: list[int] | None = None  # None: the runtime's default (ort-mobile sweeps 1, 2, 4)
    shapes: list[str] | None = None  # BATCHxSEQ; None: 1x128 for encoders, none for decoders
    data: str | None = None  # dataset whose sentences (and lengths) are the inputs
    max_samples: int = 200
    max_len: int = 128
    pad: bool = False
    prompt_len: int = 32
    new_tokens: int = 128
    seconds: float = 5.0
    rounds: int = 1  # every single-artifact worker once per round, in turn: rows are medians over rounds
    warmup: int = 3
    min_repeats: int = 30
    max_repeats: int = 2000
    rel_tol: float = 0.02
    worker_timeout_s: float = 900
    compare: bool = True  # interleave each artifact with the baseline for speedups
    speculative: str | None = None  # decoders: "lookup" adds greedy vs prompt-lookup rows on the prompt set
    prompt_set: str | None = None  # the speculative case's prompts (default: edgelm's lookup-prompts.jsonl)
    draft_tokens: int = 8
    ngram_max: int = 3

    def budget(self) -> timing.Budget:
        return timing.Budget(self.warmup, self.min_repeats, self.max_repeats, self.seconds, self.rel_tol)


def build_cases(target: Target, s: BenchSettings) -> list[Case]:
    from edgelm.models.loading import load_tokenizer

    if target.task == MODULE_TASK:
        return [module_case(target, s)]
    if s.data and target.task == "causal-lm":
        raise EdgelmError(f"--data {s.data}: decoders are timed by prompt and generation lengths (--prompt-len, "
                          "--new-tokens); dataset sentences are for encoders")
    folder = target.tokenizer_dir
    if folder is None:
        raise EdgelmError(f"{target.path}: no tokenizer files here or in its model_dir; benchmark inputs are real tokens")
    tok = load_tokenizer(folder)
    cases = [data_case(tok, s.data, s.max_samples, s.max_len, s.pad)] if s.data else []
    shapes = s.shapes if s.shapes is not None else ([] if target.task == "causal-lm" else ["1x128"])
    cases += [fixed_case(tok, *parse_shape(shape)) for shape in shapes]
    if target.task == "causal-lm" and s.new_tokens > 0:
        cases.append(decode_case(tok, s.prompt_len, s.new_tokens))
    if s.speculative:
        if target.task != "causal-lm":
            raise EdgelmError(f"speculative {s.speculative}: speculative decoding is for decoders; {target.path} is "
                              f"a {target.task} model")
        cases.append(lookup_case(tok, max(s.new_tokens, 2), speculative_spec(s), s.prompt_set))
    if not cases:
        raise EdgelmError("nothing to time: give --shapes, --data, or (decoders) --new-tokens > 0")
    return cases


def speculative_spec(s: BenchSettings) -> dict:
    from edgelm.models.speculative import METHODS, LookupSettings

    if s.speculative not in METHODS:
        raise EdgelmError(f"speculative {s.speculative!r}: unknown; use one of {', '.join(METHODS)}")
    return LookupSettings(draft_tokens=s.draft_tokens, ngram_max=s.ngram_max).as_dict()


def module_case(target: Target, s: BenchSettings) -> Case:
    """A plain module is timed on the example inputs saved beside its export (its user's real shapes)."""
    from edgelm.models.plain import load_example_inputs

    if s.data or s.shapes:
        raise EdgelmError(f"{target.path}: a plain module is timed on its example_inputs; --data/--shapes are for text models")
    feeds = load_example_inputs(target.path)
    first = next(iter(feeds.values()))
    return Case("fixed", "example_inputs", [feeds], {"batch": int(first.shape[0]) if first.ndim else 1,
                                                     "seq_len": int(first.shape[1]) if first.ndim > 1 else None})


def thread_counts(runtime: str, s: BenchSettings) -> list[int | None]:
    if s.threads:
        return list(s.threads)
    return list(RUNTIMES.get(runtime).default_threads)


def run_bench(targets: list[Target], settings: BenchSettings, baseline: Target | None = None,
              accuracy: dict[str, float] | None = None, extra_baselines: list[Target] = ()) -> dict:
    """`speedup` is against `baseline`; `speedup_by_baseline` also holds each of `extra_baselines` (e.g. the
    stock toolchain's model), interleaved with each target in the same run."""
    for runtime in settings.runtimes:
        if runtime not in RUNTIMES:
            raise EdgelmError(f"--runtime {runtime}: unknown; use one of {', '.join(RUNTIMES.names())}")
    references = [b for b in [baseline, *extra_baselines] if b is not None]
    everything = [b for b in references if b.path not in {t.path for t in targets}] + targets
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="edgelm-bench-") as tmp:
        # the candidate's tokenizer: a vocab-pruned candidate's ids are valid for its baselines too (same lengths)
        cases = build_cases(targets[0] if targets else everything[0], settings)
        feeds = Path(tmp) / "feeds.npz"
        described = save_cases(cases, feeds)
        rows = merge_rounds([[row for target in everything for runtime in settings.runtimes
                              for threads in thread_counts(runtime, settings)
                              for row in _single(target, runtime, threads, settings, described, feeds, Path(tmp))]
                             for _ in range(settings.rounds)])
        comparisons = []
        if settings.compare:
            comparisons = [c for ref in references for target in targets if target.name != ref.name
                           for runtime in settings.runtimes
                           for c in _compare(ref, target, runtime, settings, described, feeds, Path(tmp))]
    for row in rows:
        if accuracy and row["artifact"] in accuracy:
            row["accuracy"] = accuracy[row["artifact"]]
    return {"schema_version": BENCH_SCHEMA, "kind": "edgelm-bench", "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "seconds": round(time.time() - started, 1), "machine": machine_info(), "versions": library_versions(),
            "settings": settings.model_dump(), "cases": described, "baseline": baseline.name if baseline else None,
            "artifacts": {t.name: str(t.path) for t in everything}, "rows": rows, "comparisons": comparisons,
            "speedup": speedups([c for c in comparisons if baseline and c["baseline"] == baseline.name]),
            "speedup_by_baseline": {ref.name: speedups([c for c in comparisons if c["baseline"] == ref.name])
                                    for ref in references}}


def _single(target, runtime, threads, s, cases, feeds, tmp) -> list[dict]:
    base = {"artifact": target.name, "runtime": runtime, "threads": threads, "size_mb": None}
    reason = unavailable(runtime, target)
    if reason:
        return [{**base, "skipped": reason}]
    base["size_mb"] = artifact_size_mb(runtime, target)
    info(f"[dim]bench {target.name} on {runtime}" + (f" ({threads} threads)" if threads else "") + "[/dim]")
    result = spawn_worker(worker_spec(runtime, threads, target, s, cases, feeds), tmp, s.worker_timeout_s)
    if "error" in result:
        return [{**base, "error": result["error"], "peak_rss_mb": result.get("peak_rss_mb")}]
    base.update({k: result.get(k) for k in ROW_KEYS}, threads=result.get("threads"))
    return [{**base, **_case_fields(cases[r["case"]]), **{k: v for k, v in row.items() if k != "case"}}
            for r in result["results"] for row in _decodings(r)]


ROUND_SAMPLES = ("times_ms", "ttft_runs_ms")  # raw samples: pooled over rounds
ROUND_HEADLINES = ("p50_ms", "decode_tok_s", "ttft_ms")  # also kept per round, to show the spread between rounds


def merge_rounds(rounds: list[list[dict]]) -> list[dict]:
    """One row per (artifact, runtime, threads, case, decoding): numeric figures the median over the rounds that
    measured it, raw samples pooled, `rounds` and the per-round headlines; a row no round measured stays as it came."""
    if len(rounds) == 1:
        return rounds[0]
    groups: dict[tuple, list[dict]] = {}
    for row in (r for one in rounds for r in one):
        key = tuple(row.get(k) for k in ("artifact", "runtime", "threads", "case", "decoding"))
        groups.setdefault(key, []).append(row)
    return [_merged(rows) for rows in groups.values()]


def _merged(rows: list[dict]) -> dict:
    measured = [r for r in rows if "error" not in r and "skipped" not in r]
    if not measured:
        return rows[0]
    merged = dict(measured[0])
    for key, value in measured[0].items():
        values = [r.get(key) for r in measured]
        if key in ROUND_SAMPLES:
            merged[key] = [x for v in values if v for x in v]
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and all(
                isinstance(v, (int, float)) for v in values):
            merged[key] = timing.median(values)
    if "times_ms" in merged:
        merged["n"] = len(merged["times_ms"])
    merged["rounds"] = len(measured)
    merged["by_round"] = {k: [r.get(k) for r in measured] for k in ROUND_HEADLINES if measured[0].get(k) is not None}
    return merged


def _decodings(result: dict) -> list[dict]:
    """A speculative case's result holds one row per decoding (greedy, lookup); any other case is one row."""
    if "decodings" not in result:
        return [result]
    return [{"case": result["case"], **row} for row in result["decodings"]]


def _case_fields(case: dict) -> dict:
    return {("case" if k == "label" else "inputs" if k == "kind" else k): v for k, v in case.items() if k != "calls"}


def _compare(baseline, target, runtime, s, cases, feeds, tmp) -> list[dict]:
    base = {"baseline": baseline.name, "artifact": target.name, "runtime": runtime}
    reason = unavailable(runtime, baseline) or unavailable(runtime, target)
    if reason:
        return [{**base, "skipped": reason}]
    threads = thread_counts(runtime, s)[0]
    info(f"[dim]interleave {target.name} vs {baseline.name} on {runtime}[/dim]")
    spec = worker_spec(runtime, threads, target, s, cases, feeds, baseline=baseline.to_json())
    result = spawn_worker(spec, tmp, s.worker_timeout_s)
    if "error" in result:
        return [{**base, "error": result["error"]}]
    return [{**base, "threads": result.get("threads"), "case": cases[r["case"]]["label"],
             **{k: v for k, v in r.items() if k != "case"}} for r in result["results"]]


def worker_spec(runtime, threads, target, s, cases, feeds, **extra) -> dict:
    return {"runtime": runtime, "runtime_record": packed(RUNTIMES.get(runtime)), "threads": threads,
            "target": target.to_json(), "feeds": str(feeds), "cases": cases, "budget": s.budget().as_dict(), **extra}


def speedups(comparisons: list[dict]) -> dict[str, float]:
    """{runtime: median per-pair ratio} on each runtime's first compared case (the headline input)."""
    out: dict[str, float] = {}
    for c in comparisons:
        if "ratio" in c and c["runtime"] not in out:
            out[c["runtime"]] = c["ratio"]["median"]
    return out


def spawn_worker(spec: dict, tmp: Path, timeout_s: float) -> dict:
    """Run edgelm.measure.worker in a fresh interpreter; its JSON result, or {"error": ...}."""
    fd, spec_path = tempfile.mkstemp(suffix=".json", dir=tmp)
    os.close(fd)
    out_path = Path(spec_path).with_suffix(".out.json")
    Path(spec_path).write_text(json.dumps(spec))
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "TRANSFORMERS_VERBOSITY": "error"}
    try:
        proc = subprocess.run([sys.executable, "-m", "edgelm.measure.worker", spec_path, str(out_path)],
                              capture_output=True, text=True, timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"worker exceeded {timeout_s:.0f} s (raise --worker-timeout or lower the budget)"}
    if not out_path.is_file():
        tail = [ln for ln in proc.stderr.splitlines() if ln.strip()][-1:] or [f"exit code {proc.returncode}"]
        return {"error": f"worker died: {tail[0][:300]}"}
    return json.loads(out_path.read_text())


def write_bench_json(bench: dict, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(bench, indent=1))
    return path
