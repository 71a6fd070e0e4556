"""Latency benchmarks: one small module per runtime (raw timings only), `timing` computes every statistic,
`worker` runs one runtime in a fresh process, `suite` orchestrates, `machine` describes where it ran."""
