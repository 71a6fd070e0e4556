"""The bundle self-test: a few golden inputs with the outputs the shipped files give on the build machine
(`selftest.json`, hashed in manifest.json like every bundle file), and the check an app runs at first launch.

Per input: the token ids (tokenizer drift shows here first), then the label and logits (classifier), the embedding
(embedder) or the greedy tokens and the first step's top logits (decoder). numpy only: the reference consumer,
the generated JS/Kotlin/Swift consumers and this module check the same figures against the same tolerances.
"""

from __future__ import annotations

import numpy as np

SELF_TEST_FILE = "selftest.json"
GOLDEN_TEXTS = {
    "sequence-classification": ["a great fun movie, I loved every minute", "the plot was boring and the acting was bad",
                                "It is what it is."],
    "feature-extraction": ["A man is playing a guitar.", "The weather is lovely today.", "Small models run on phones."],
    "causal-lm": ["The capital of France is", "Once upon a time, there was", "def add(a, b):"],
}
GREEDY_TOKENS = 8
TOP_LOGITS = 8


def rounded(values) -> list[float]:
    return [round(float(x), 6) for x in values]


def observe(model, text: str) -> dict:
    """What the bundle gives for one golden input, in the shape of a selftest.json case."""
    ids = model.token_ids(text)
    if model.task == "sequence-classification":
        out = model.classify(text)
        return {"text": text, "input_ids": ids, "label": out["label"], "label_id": out["label_id"], "logits": out["logits"]}
    if model.task == "feature-extraction":
        return {"text": text, "input_ids": ids, "embedding": model.embed(text)["embedding"]}
    tokens, logits = model.greedy(ids, GREEDY_TOKENS, return_logits=True)
    top = np.argsort(-np.asarray(logits[0], np.float64), kind="stable")[:TOP_LOGITS]
    return {"text": text, "input_ids": ids, "greedy_tokens": tokens,
            "first_logits": {"ids": [int(i) for i in top], "values": rounded(np.asarray(logits[0])[top])}}


def golden(model, tolerances: dict) -> dict:
    """selftest.json's content for a loaded BundleModel: its outputs on GOLDEN_TEXTS plus the tolerances."""
    cases = [observe(model, text) for text in GOLDEN_TEXTS[model.task]]
    return {"task": model.task, "model": model.manifest["bundle"]["model"], "tolerances": dict(tolerances),
            "cases": cases}


def first_difference(want: list, got: list) -> int | None:
    """Index of the first differing element (length differences count), None when equal."""
    for i, (a, b) in enumerate(zip(want, got)):
        if a != b:
            return i
    return None if len(want) == len(got) else min(len(want), len(got))


def max_abs_diff(want, got) -> float:
    want, got = np.asarray(want, np.float64), np.asarray(got, np.float64)
    return float(np.max(np.abs(want - got))) if want.shape == got.shape and want.size else float("inf")


def cosine(want, got) -> float:
    want, got = np.asarray(want, np.float64), np.asarray(got, np.float64)
    if want.shape != got.shape:
        return 0.0
    norms = np.linalg.norm(want) * np.linalg.norm(got)
    return float(want @ got / norms) if norms else float(np.array_equal(want, got))


def list_mismatch(what: str, want: list, got: list) -> str | None:
    at = first_difference(want, got)
    if at is None:
        return None
    pick = lambda xs: xs[at] if at < len(xs) else "nothing"
    return f"{what} differ at position {at} (expected {pick(want)}, got {pick(got)})"


def classifier_mismatch(case: dict, got: dict, tol: dict) -> str | None:
    if got["label_id"] != case["label_id"]:
        return f"label {got['label']!r}, expected {case['label']!r}"
    diff = max_abs_diff(case["logits"], got["logits"])
    return f"logits max_abs_diff {diff:.6g} > {tol['max_abs_diff']}" if diff > tol["max_abs_diff"] else None


def embedding_mismatch(case: dict, got: dict, tol: dict) -> str | None:
    cos = cosine(case["embedding"], got["embedding"])
    return f"embedding cosine {cos:.6f} < {tol['min_cosine']}" if cos < tol["min_cosine"] else None


def decoder_mismatch(case: dict, got: dict, tol: dict) -> str | None:
    tokens = list_mismatch("greedy tokens", case["greedy_tokens"], got["greedy_tokens"])
    if tokens:
        return tokens
    diff = max_abs_diff(case["first_logits"]["values"], got["first_logits"]["values"])  # both at the golden top ids
    return f"first-step logits max_abs_diff {diff:.6g} > {tol['max_abs_diff']}" if diff > tol["max_abs_diff"] else None


CHECKS = {"sequence-classification": classifier_mismatch, "feature-extraction": embedding_mismatch,
          "causal-lm": decoder_mismatch}


def case_mismatch(task: str, case: dict, got: dict, tol: dict) -> str | None:
    """Why `got` does not reproduce the golden `case` (None: it does)."""
    return list_mismatch("token ids (tokenizer drift)", case["input_ids"], got["input_ids"]) \
        or CHECKS[task](case, got, tol)


def run_self_test(model, spec: dict) -> tuple[list[str], str]:
    """(one line per mismatched input, a one-line summary) for a loaded BundleModel and its selftest.json."""
    task, tol, cases = spec["task"], spec["tolerances"], spec["cases"]
    failures = []
    for n, case in enumerate(cases, 1):
        why = case_mismatch(task, case, observe_for(model, case), tol)
        if why:
            failures.append(f"input {n} ({case['text']!r}): {why}")
    figures = {"sequence-classification": f"labels, logits within {tol.get('max_abs_diff')}",
               "feature-extraction": f"embeddings, cosine >= {tol.get('min_cosine')}",
               "causal-lm": f"greedy tokens, first-step logits within {tol.get('max_abs_diff')}"}[task]
    verdict = "FAILED" if failures else "passed"
    return failures, f"self-test {verdict}: {len(cases) - len(failures)}/{len(cases)} golden inputs reproduce ({figures})"


def observe_for(model, case: dict) -> dict:
    """observe(), generating as many tokens as the golden case holds and reading the logits at its top ids."""
    if model.task != "causal-lm":
        return observe(model, case["text"])
    ids = model.token_ids(case["text"])
    tokens, logits = model.greedy(ids, max(len(case["greedy_tokens"]), 1), return_logits=True)
    first = np.asarray(logits[0], np.float64)
    want_ids = [i for i in case["first_logits"]["ids"] if 0 <= i < first.size]
    return {"text": case["text"], "input_ids": ids, "greedy_tokens": tokens,
            "first_logits": {"ids": want_ids, "values": rounded(first[want_ids])}}
