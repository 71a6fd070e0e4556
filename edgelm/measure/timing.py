"""The ONLY place with warmup, repeats, stability and percentiles. Runtimes hand in a zero-argument call (or a
list of calls cycled through, e.g. one per dataset sample); everything statistical happens here."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Callable, Sequence


@dataclass
class Budget:
    warmup: int = 3  # untimed calls (per input) before measuring
    min_repeats: int = 30  # never stop before this many timed calls (10 left b1xs128 torch-cpu medians 7-16% apart run to run)
    max_repeats: int = 2000
    seconds: float = 5.0  # time budget for the timed calls of one case
    rel_tol: float = 0.02  # the median is stable when adding the last window moved it by less than this

    def as_dict(self) -> dict:
        return asdict(self)


def time_ms(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return (time.perf_counter() - start) * 1e3


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default method), without needing numpy."""
    data = sorted(values)
    if not data:
        return math.nan
    pos = (len(data) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def summarize(times_ms: Sequence[float]) -> dict:
    n = len(times_ms)
    mean = sum(times_ms) / n if n else math.nan
    std = math.sqrt(sum((t - mean) ** 2 for t in times_ms) / (n - 1)) if n > 1 else 0.0
    return {"p50_ms": _r(percentile(times_ms, 50)), "p90_ms": _r(percentile(times_ms, 90)),
            "p99_ms": _r(percentile(times_ms, 99)), "mean_ms": _r(mean), "std_ms": _r(std),
            "min_ms": _r(min(times_ms)) if n else None, "max_ms": _r(max(times_ms)) if n else None, "n": n}


def _r(x: float) -> float:
    return round(x, 4)


def is_stable(times_ms: Sequence[float], window: int, rel_tol: float) -> bool:
    """The median of all runs differs from the median without the last `window` runs by < rel_tol."""
    if len(times_ms) < 2 * window:
        return False
    before, now = median(times_ms[:-window]), median(times_ms)
    return abs(now - before) <= rel_tol * before


def _warm(calls: Sequence[Callable[[], object]], budget: Budget) -> None:
    for call in calls:
        for _ in range(budget.warmup):
            call()


def _until_done(step: Callable[[], int], series: Callable[[], Sequence[float]], budget: Budget, window: int,
                minimum: int) -> str:
    """Call step() (returns the run count) until max_repeats, a stable median of series() checked every
    `window` runs once `minimum` ran, or the time budget (never before min_repeats). Returns why it stopped."""
    deadline = time.perf_counter() + budget.seconds
    while True:
        n = step()
        if n >= budget.max_repeats:
            return "max_repeats"
        if n % window == 0 and n >= minimum and is_stable(series(), window, budget.rel_tol):
            return "stable"
        if time.perf_counter() > deadline and n >= min(minimum, budget.min_repeats):
            return "time_budget"


def repeat(calls: Sequence[Callable[[], object]], budget: Budget) -> tuple[list[float], str]:
    """Warm up, then time calls (cycling through them) until the median is stable or the budget ends.

    With several calls (dataset samples) at least one full pass is timed when the budget allows, and
    stability is only checked on whole passes so that the length mix stays the dataset's.
    Returns (times in ms, why it stopped)."""
    _warm(calls, budget)
    times: list[float] = []

    def step() -> int:
        times.append(time_ms(calls[len(times) % len(calls)]))
        return len(times)

    why = _until_done(step, lambda: times, budget, max(len(calls), 5), max(budget.min_repeats, len(calls)))
    return times, why


def interleave(a: Sequence[Callable[[], object]], b: Sequence[Callable[[], object]], budget: Budget
               ) -> tuple[list[float], list[float], str]:
    """Time two artifacts on the same inputs, alternating A,B / B,A so slow drift (thermal, neighbours) hits
    both alike. Pair i is (a[i], b[i]) on the same input. Stops like `repeat`, on the ratio's median."""
    _warm(a, budget)
    _warm(b, budget)
    ta: list[float] = []
    tb: list[float] = []

    def step() -> int:
        i = len(ta)
        if i % 2 == 0:
            ta.append(time_ms(a[i % len(a)]))
            tb.append(time_ms(b[i % len(b)]))
        else:
            tb.append(time_ms(b[i % len(b)]))
            ta.append(time_ms(a[i % len(a)]))
        return len(ta)

    why = _until_done(step, lambda: pair_ratios(ta, tb), budget, max(len(a), 5), max(budget.min_repeats, len(a)))
    return ta, tb, why


def pair_ratios(baseline_ms: Sequence[float], candidate_ms: Sequence[float]) -> list[float]:
    """Per-pair speedup: baseline time / candidate time (> 1 means the candidate is faster)."""
    return [b / c for b, c in zip(baseline_ms, candidate_ms) if c > 0]


def summarize_ratios(ratios: Sequence[float]) -> dict:
    return {"median": _r(median(ratios)), "p10": _r(percentile(ratios, 10)), "p90": _r(percentile(ratios, 90)),
            "n": len(ratios)}


def time_generation(generator, prompt_ids, new_tokens: int, budget: Budget) -> tuple[list[float], list[list[float]], str]:
    """Greedy generation timed per step: TTFT (prefill + first token) and each decode step, repeated like
    `repeat` (stability judged on the median TTFT+decode total). Returns (ttft_ms per run, steps_ms per run, why)."""

    def generate(record: bool):
        start = time.perf_counter()
        token, state = generator.prefill(prompt_ids)
        ttft = (time.perf_counter() - start) * 1e3
        steps = []
        for _ in range(new_tokens - 1):
            t0 = time.perf_counter()
            token, state = generator.decode(token, state)
            steps.append((time.perf_counter() - t0) * 1e3)
        return ttft, steps

    for _ in range(min(budget.warmup, 1)):  # one warm generation: decoding is long, caches warm quickly
        generate(False)
    ttfts, steps, totals = [], [], []
    deadline = time.perf_counter() + budget.seconds
    minimum = max(1, min(budget.min_repeats, 5))
    while True:
        ttft, run_steps = generate(True)
        ttfts.append(ttft)
        steps.append(run_steps)
        totals.append(ttft + sum(run_steps))
        if len(totals) >= max(minimum * 2, 4) and is_stable(totals, 2, budget.rel_tol):
            return ttfts, steps, "stable"
        if len(totals) >= budget.max_repeats:
            return ttfts, steps, "max_repeats"
        if time.perf_counter() > deadline and len(totals) >= minimum:
            return ttfts, steps, "time_budget"


def summarize_generation(ttft_ms: Sequence[float], steps_ms: Sequence[Sequence[float]], prompt_len: int) -> dict:
    """Decoder figures: per-step decode latency percentiles (p50_ms ...), TTFT, prefill and decode tokens/s."""
    flat = [s for run in steps_ms for s in run]
    decode_s = [sum(run) / 1e3 for run in steps_ms if run]
    tokens_per_run = len(steps_ms[0]) if steps_ms else 0
    ttft = median(ttft_ms)
    out = summarize(flat) if flat else {"n": 0}
    out.update({"ttft_ms": _r(ttft), "prefill_tok_s": _r(prompt_len / (ttft / 1e3)) if ttft else None,
                "decode_tok_s": _r(tokens_per_run / median(decode_s)) if decode_s and median(decode_s) > 0 else None,
                "generations": len(ttft_ms)})
    return out


def time_decoders(decoders: dict, prompts: Sequence, new_tokens: int, budget: Budget, eos_token_id: int | None = None
                  ) -> tuple[dict[str, dict], dict[str, list[list[int]]], str]:
    """Whole generations of every prompt by each decoder (prefill(ids) -> (token, state), finish(token, state, n,
    eos) -> tokens), interleaved per prompt (A B, then B A on the next) so drift hits all alike; repeated in passes
    over the prompt set until the first-over-last decoder decode-time ratio is stable, the time budget ends (after one full
    pass) or max_repeats passes. Returns ({name: {"ttft_ms", "decode_ms", "tokens" per prompt per pass}},
    {name: tokens per prompt of the first pass}, why it stopped)."""
    names = list(decoders)
    runs = {n: {"ttft_ms": [], "decode_ms": [], "tokens": []} for n in names}
    outputs: dict[str, list[list[int]]] = {n: [] for n in names}

    def generate(name: str, prompt) -> tuple[float, float, list[int]]:
        decoder = decoders[name]
        start = time.perf_counter()
        token, state = decoder.prefill(prompt)
        first = time.perf_counter()
        tokens = decoder.finish(token, state, new_tokens, eos_token_id)
        return (first - start) * 1e3, (time.perf_counter() - first) * 1e3, tokens

    for name in names:  # one warm generation each: caches and the allocator warm quickly
        generate(name, prompts[0])
    deadline, totals = time.perf_counter() + budget.seconds, []
    while True:
        passes = len(totals)
        for n in names:
            for key in runs[n]:
                runs[n][key].append([])
        for i, prompt in enumerate(prompts):
            for name in (names if (passes + i) % 2 == 0 else names[::-1]):
                ttft, decode, tokens = generate(name, prompt)
                runs[name]["ttft_ms"][-1].append(ttft)
                runs[name]["decode_ms"][-1].append(decode)
                runs[name]["tokens"][-1].append(len(tokens))
                if passes == 0:
                    outputs[name].append(tokens)
        totals.append(sum(runs[names[0]]["decode_ms"][-1]) / max(sum(runs[names[-1]]["decode_ms"][-1]), 1e-9))
        if len(totals) >= 4 and is_stable(totals, 2, budget.rel_tol):
            return runs, outputs, "stable"
        if len(totals) >= budget.max_repeats:
            return runs, outputs, "max_repeats"
        if time.perf_counter() > deadline:
            return runs, outputs, "time_budget"


def summarize_decoder(runs: dict, prompt_lens: Sequence[int]) -> dict:
    """One decoder's figures over a prompt set: decode tok/s of each pass (tokens after the first / decode time,
    summed over the prompts) and its median, TTFT and per-token latency percentiles over all generations."""
    per_pass = [sum(t - 1 for t in tokens) / (sum(ms) / 1e3) if sum(ms) > 0 else None
                for tokens, ms in zip(runs["tokens"], runs["decode_ms"])]
    per_token = [ms / (t - 1) for tokens, times in zip(runs["tokens"], runs["decode_ms"])
                 for t, ms in zip(tokens, times) if t > 1]
    ttfts = [t for run in runs["ttft_ms"] for t in run]
    ttft = median(ttfts)
    out = summarize(per_token) if per_token else {"n": 0}
    rates = [r for r in per_pass if r]
    out.update({"ttft_ms": _r(ttft), "decode_tok_s": _r(median(rates)) if rates else None,
                "decode_tok_s_per_pass": [_r(r) if r else None for r in per_pass],
                "prefill_tok_s": _r(sum(prompt_lens) / len(prompt_lens) / (ttft / 1e3)) if ttft else None,
                "generated_tokens": sum(runs["tokens"][0]) if runs["tokens"] else 0, "generations": len(ttfts)})
    return out
