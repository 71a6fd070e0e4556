"""The stage test-case table: every registered stage kind runs through the shared tester (test_all_stages.py)
on tiny models. One entry per case: (kind, tiny arch, task, config dict, data kind or None).

data kinds: "labelled" (a small labelled TSV), "text" (a small text file) — built by the tester.
Each issue's work owns its own rows; add cases for every task the stage supports.
"""

CASES: list[tuple[str, str, str, dict, str | None]] = [
    # (kind, arch, task, config, data)
]
