"""One runtime in one fresh process: `python -m edgelm.measure.worker SPEC.json RESULT.json`.

Measures load time, first-inference time, then every case with `timing`, and this process's peak RSS. With a
`baseline` target in the spec it instead loads both and interleaves them per case (per-pair ratios). Only
numpy and the runtime's own library are imported, so RSS is the runtime's. Failures become an `error` field.
The runtime is looked up in edgelm.runtimes' registry; one registered elsewhere travels in the spec as its record."""

from __future__ import annotations

import base64
import importlib
import json
import pickle
import sys
import time
from pathlib import Path

from edgelm.measure import timing
from edgelm.measure.inputs import load_feeds
from edgelm.measure.machine import peak_rss_mb
from edgelm.runtimes.base import RUNTIMES, RuntimeSpec, Target, open_runner, register_runtime
from edgelm.core.errors import EdgelmError


def _error(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:300]


def _calls(runner, case: dict, feeds: list[dict]):
    if case["kind"] in ("decode", "lookup"):  # one greedy generation of the (first) prompt
        generator = runner.generator()
        prompt, steps = feeds[0]["input_ids"], case["new_tokens"]

        def generate():
            token, state = generator.prefill(prompt)
            for _ in range(steps - 1):
                token, state = generator.decode(token, state)

        return [generate]
    return [(lambda f=f: runner.run(f)) for f in feeds]


def measure_case(runner, case: dict, feeds: list[dict], budget: timing.Budget) -> dict:
    if case["kind"] == "lookup":
        from edgelm.measure.lookup_bench import measure_lookup

        return measure_lookup(runner, case, feeds, budget)
    if case["kind"] == "decode":
        ttft, steps, why = timing.time_generation(runner.generator(), feeds[0]["input_ids"], case["new_tokens"], budget)
        return {"times_ms": [round(s, 4) for run in steps for s in run], "ttft_runs_ms": [round(t, 4) for t in ttft],
                "stop": why, **timing.summarize_generation(ttft, steps, case["prompt_len"])}
    times, why = timing.repeat(_calls(runner, case, feeds), budget)
    return {"times_ms": [round(t, 4) for t in times], "stop": why, **timing.summarize(times)}


def compare_case(base, cand, case: dict, feeds: list[dict], budget: timing.Budget) -> dict:
    tb, tc, why = timing.interleave(_calls(base, case, feeds), _calls(cand, case, feeds), budget)
    ratios = timing.pair_ratios(tb, tc)
    return {"baseline_p50_ms": timing.summarize(tb)["p50_ms"], "candidate_p50_ms": timing.summarize(tc)["p50_ms"],
            "ratio": timing.summarize_ratios(ratios), "stop": why}


def packed(record: RuntimeSpec) -> str:
    """The runtime's record as text for the worker spec (its callables travel by module and name)."""
    return base64.b64encode(pickle.dumps(record)).decode()


def registered(spec: dict) -> RuntimeSpec:
    """The spec's runtime; one registered outside edgelm.runtimes (a plugin, a test) arrives as its record."""
    if spec["runtime"] not in RUNTIMES and spec.get("runtime_record"):
        register_runtime(pickle.loads(base64.b64decode(spec["runtime_record"])))
    return RUNTIMES.get(spec["runtime"])


def _cannot(record: RuntimeSpec, case: dict, baseline: bool = False) -> str | None:
    if case["kind"] in ("decode", "lookup") and not record.generates:
        return f"{record.name}: token generation is not supported on this runtime"
    if case["kind"] == "lookup" and baseline:
        return "the speculative case compares greedy and lookup decoding of one artifact in its own rows"
    return None


def _each_case(record: RuntimeSpec, cases: list[dict], measure, baseline: bool = False) -> list[dict]:
    results = []
    for i, case in enumerate(cases):
        reason = _cannot(record, case, baseline)
        results.append({"case": i, "skipped": reason} if reason else _guarded(i, lambda: measure(i, case)))
    return results


def run_spec(spec: dict) -> dict:
    budget = timing.Budget(**spec["budget"])
    cases = spec["cases"]
    feeds = load_feeds(Path(spec["feeds"]), cases)
    record = registered(spec)
    start = time.perf_counter()
    for library in record.libraries:
        importlib.import_module(library)
    loading = time.perf_counter()
    runner = open_runner(spec["runtime"], Target.from_json(spec["target"]), spec.get("threads"))
    result = {"import_ms": round((loading - start) * 1e3, 3), "load_ms": round((time.perf_counter() - loading) * 1e3, 3),
              "threads": runner.threads, "results": []}
    if spec.get("baseline"):
        base = open_runner(spec["runtime"], Target.from_json(spec["baseline"]), spec.get("threads"))
        result["results"] = _each_case(record, cases, lambda i, case: compare_case(base, runner, case, feeds[i], budget),
                                       baseline=True)
        return result
    result["first_ms"] = _first_ms(record, runner, cases[0], feeds[0])
    result["results"] = _each_case(record, cases, lambda i, case: measure_case(runner, case, feeds[i], budget))
    return result


def _first_ms(record: RuntimeSpec, runner, case: dict, feeds: list[dict]) -> float | None:
    """The process's first inference (cold caches, lazy init)."""
    if _cannot(record, case):
        return None
    return _guarded(0, lambda: {"ms": round(timing.time_ms(_calls(runner, case, feeds)[0]), 3)}).get("ms")


def _guarded(index: int, measure) -> dict:
    try:
        return {"case": index, **measure()}
    except EdgelmError as exc:  # the runtime cannot do this case (e.g. no generation on .pte): a reason, not a crash
        return {"case": index, "skipped": str(exc)}
    except Exception as exc:  # one case failing (unsupported shape, no generator) must not lose the others
        return {"case": index, "error": _error(exc)}


def main(argv: list[str]) -> int:
    spec_path, out_path = Path(argv[0]), Path(argv[1])
    spec = json.loads(spec_path.read_text())
    try:
        result = run_spec(spec)
    except Exception as exc:
        result = {"error": _error(exc)}
    result["peak_rss_mb"] = peak_rss_mb()
    out_path.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
