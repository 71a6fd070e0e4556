"""timing.py statistics and stopping rules, on deterministic fake timings (no wall-clock assertions)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgelm.measure import timing


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0.001, 1e4), min_size=1, max_size=200), st.sampled_from([0, 10, 50, 90, 99, 100]))
def test_percentile_matches_numpy(values, q):
    assert timing.percentile(values, q) == pytest.approx(np.percentile(values, q), rel=1e-9, abs=1e-9)


def test_summarize_fields_and_values():
    s = timing.summarize([1.0, 2.0, 3.0, 4.0, 100.0])
    assert s["p50_ms"] == 3.0 and s["n"] == 5 and s["min_ms"] == 1.0 and s["max_ms"] == 100.0
    assert s["mean_ms"] == 22.0
    assert s["std_ms"] == pytest.approx(np.std([1, 2, 3, 4, 100], ddof=1), rel=1e-4)
    assert s["p90_ms"] == pytest.approx(np.percentile([1, 2, 3, 4, 100], 90))


def test_is_stable_needs_two_windows_and_a_steady_median():
    assert not timing.is_stable([1.0] * 9, window=5, rel_tol=0.02)
    assert timing.is_stable([1.0] * 10, window=5, rel_tol=0.02)
    assert not timing.is_stable([1.0] * 5 + [5.0] * 5 + [9.0] * 5, window=5, rel_tol=0.02)


@pytest.fixture
def fake_clock(monkeypatch):
    """time_ms returns what the call returns, so each fake call 'takes' a chosen number of ms."""
    monkeypatch.setattr(timing, "time_ms", lambda call: call())


def test_repeat_stops_once_median_is_stable(fake_clock):
    times, why = timing.repeat([lambda: 2.0], timing.Budget(warmup=1, min_repeats=10, seconds=60))
    assert why == "stable" and len(times) == 10 and set(times) == {2.0}


def test_repeat_respects_max_repeats_and_cycles_samples(fake_clock):
    seen = []
    calls = [lambda i=i: seen.append(i) or float(1 + 10 * i) for i in range(3)]
    budget = timing.Budget(warmup=2, min_repeats=5, max_repeats=13, seconds=60, rel_tol=-1)  # never "stable"
    times, why = timing.repeat(calls, budget)
    assert why == "max_repeats" and len(times) == 13
    assert seen[:6] == [0, 0, 1, 1, 2, 2]  # warmup: each sample twice
    assert times[:6] == [1.0, 11.0, 21.0, 1.0, 11.0, 21.0]  # then cycled in order


def test_repeat_time_budget_still_gives_min_repeats():
    times, why = timing.repeat([lambda: None], timing.Budget(warmup=0, min_repeats=7, seconds=0.0, rel_tol=-1))
    assert why == "time_budget" and len(times) == 7


def test_interleave_alternates_order_and_ratios(fake_clock):
    order = []
    a = [lambda: order.append("a") or 10.0]
    b = [lambda: order.append("b") or 4.0]
    ta, tb, why = timing.interleave(a, b, timing.Budget(warmup=0, min_repeats=4, max_repeats=4, seconds=60, rel_tol=-1))
    assert order == ["a", "b", "b", "a", "a", "b", "b", "a"]
    assert why == "max_repeats" and ta == [10.0] * 4 and tb == [4.0] * 4
    ratios = timing.pair_ratios(ta, tb)
    assert timing.summarize_ratios(ratios)["median"] == 2.5


class CountingGenerator:
    def __init__(self):
        self.prefills = self.decodes = 0

    def prefill(self, ids):
        self.prefills += 1
        return 1, [len(ids[0])]

    def decode(self, token, state):
        self.decodes += 1
        return token + 1, state + [token]


def test_time_generation_counts_steps():
    gen = CountingGenerator()
    ttft, steps, why = timing.time_generation(gen, [[1, 2, 3]], new_tokens=5, budget=timing.Budget(min_repeats=3, seconds=0))
    assert len(ttft) == len(steps) >= 3 and all(len(run) == 4 for run in steps)
    assert gen.prefills == len(ttft) + 1  # one warm-up generation
    assert why in ("stable", "time_budget")


def test_summarize_generation_arithmetic():
    out = timing.summarize_generation([10.0, 20.0, 30.0], [[5.0, 5.0], [5.0, 5.0], [10.0, 10.0]], prompt_len=40)
    assert out["ttft_ms"] == 20.0 and out["prefill_tok_s"] == 2000.0
    assert out["decode_tok_s"] == 200.0  # 2 tokens in a median 10 ms
    assert out["p50_ms"] == 5.0 and out["n"] == 6 and out["generations"] == 3


class FakeDecoder:
    """Emits `per_call` tokens per finish-loop step, taking `ms` per step (a fake clock)."""

    def __init__(self, name, order, clock, ms):
        self.name, self.order, self.clock, self.ms = name, order, clock, ms

    def prefill(self, ids):
        self.order.append(self.name)
        self.clock[0] += 1.0
        return 0, None

    def finish(self, token, state, n, eos):
        self.clock[0] += self.ms * (n - 1)
        return list(range(n))


def test_time_decoders_interleaves_per_prompt_and_sums_passes(monkeypatch):
    clock, order = [0.0], []
    monkeypatch.setattr(timing.time, "perf_counter", lambda: clock[0] / 1e3)
    decoders = {"greedy": FakeDecoder("greedy", order, clock, 4.0), "lookup": FakeDecoder("lookup", order, clock, 1.0)}
    runs, outputs, why = timing.time_decoders(decoders, [[1], [2]], 5, timing.Budget(max_repeats=2, seconds=60, rel_tol=-1))
    assert why == "max_repeats" and order[2:] == ["greedy", "lookup", "lookup", "greedy", "lookup", "greedy", "greedy", "lookup"]
    assert outputs["greedy"] == outputs["lookup"] == [[0, 1, 2, 3, 4]] * 2
    assert runs["greedy"]["decode_ms"] == [[16.0, 16.0]] * 2 and runs["lookup"]["tokens"] == [[5, 5]] * 2
    out = timing.summarize_decoder(runs["lookup"], [10, 30])
    assert out["decode_tok_s"] == 1000.0 and out["ttft_ms"] == 1.0 and out["prefill_tok_s"] == 20000.0
    assert out["generated_tokens"] == 10 and out["generations"] == 4 and out["p50_ms"] == 1.0
