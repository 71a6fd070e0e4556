"""Measurement: quality metrics (accuracy, perplexity, ICL, fidelity) and latency benchmarks (timing, worker,
suite, machine)."""
