"""The stage test-case table: every registered stage kind runs through the shared tester (test_all_stages.py)
on tiny models. One entry per case: (kind, tiny arch, task, config dict, data kind or None).

data kinds: "labelled" (a small labelled TSV), "text" (a small text file) — built by the tester.
Each issue's work owns its own rows; add cases for every task the stage supports.
"""

CASES: list[tuple[str, str, str, dict, str | None]] = [
    # (kind, arch, task, config, data)
    # eval (issue 8): torch runtime, reference = the run's input model
    ("eval", "bert", "sequence-classification", {"metrics": ["accuracy"], "runtime": ["torch"]}, "labelled"),
    ("eval", "bert", "feature-extraction", {"runtime": ["torch"], "fidelity_texts": 8}, None),
    ("eval", "llama", "causal-lm", {"runtime": ["torch"], "ppl_max_tokens": 64, "icl_samples": 8, "gen_tokens": 4}, None),
    # bench (issue 4): torch-cpu in a worker process, tiny budgets (timings are never asserted)
    ("bench", "bert", "sequence-classification", {"runtimes": ["torch-cpu"], "shapes": ["1x8"], "seconds": 0.2}, "labelled"),
    ("bench", "llama", "causal-lm", {"runtimes": ["torch-cpu"], "prompt_len": 4, "new_tokens": 4, "seconds": 0.2}, None),
]
