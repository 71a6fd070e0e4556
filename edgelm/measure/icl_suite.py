"""A built-in in-context-learning suite: small skills a decoder shows from a few demonstrations, generated here at
run time (no downloads), so compression can be checked skill by skill (`edgelm eval MODEL --metric icl-suite`).

Tasks (each a fixed, seeded list of (input, answer) pairs):
  antonyms        hot -> cold
  capitals        France -> Paris
  uppercase       house -> HOUSE
  next_number     41 -> 42
  next_letter     c -> d
  first_letter    garden -> g
  addition        3 + 5 -> 8          (one-digit operands)

Prompt: k demonstrations from the same task (seeded per query, never the query itself), then the query, in the
template `Input: {text}\\nOutput: {label}`, joined by blank lines.
Scoring: free answer, exact match of the greedy continuation: a query counts as right when greedy decoding after
the prompt starts with the tokens of ' answer'. It is computed teacher-forced (one forward of prompt + answer,
the argmax at every answer position must be the answer's token), which equals greedy decoding for those tokens
and needs only the EvalModel's forward, so torch and ONNX runtimes score alike.
Figures: accuracy per task (pt) and their mean; against a reference, the drop per task (reference - candidate).
"""

from __future__ import annotations

import random

from edgelm.measure.quality import ICL_SEPARATOR, EvalModel, fill, greedy_matches, query_prompt

SUITE_TEMPLATE = "Input: {text}\nOutput: {label}"
ANTONYMS = ("hot cold", "big small", "up down", "fast slow", "happy sad", "light dark", "old new", "open closed",
            "rich poor", "early late", "hard soft", "long short", "high low", "wet dry", "full empty", "strong weak",
            "clean dirty", "good bad", "true false", "win lose")
CAPITALS = ("France Paris", "Germany Berlin", "Italy Rome", "Spain Madrid", "Japan Tokyo", "Russia Moscow",
            "Egypt Cairo", "Greece Athens", "Portugal Lisbon", "Austria Vienna", "Ireland Dublin", "Norway Oslo",
            "Sweden Stockholm", "Poland Warsaw", "Canada Ottawa", "China Beijing", "Kenya Nairobi", "Peru Lima",
            "Cuba Havana", "Thailand Bangkok")
WORDS = ("house", "garden", "river", "table", "window", "pencil", "mountain", "orange", "winter", "music",
         "doctor", "bridge", "yellow", "forest", "camera", "planet", "silver", "kitchen", "letter", "island")
LETTERS = "abcdefghijklmnopqrstuvwxy"


def pairs(lines) -> list[tuple[str, str]]:
    return [tuple(line.split()) for line in lines]


def numbers(seed: int, n: int) -> list[tuple[str, str]]:
    return [(str(x), str(x + 1)) for x in random.Random(seed).sample(range(10, 99), n)]


def additions(seed: int, n: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    return [(f"{a} + {b}", str(a + b)) for a, b in ((rng.randrange(10), rng.randrange(10)) for _ in range(n))]


def suite_tasks(seed: int = 0, n: int = 20) -> dict[str, list[tuple[str, str]]]:
    """{task: (input, answer) pairs}, the same for the same seed."""
    letters = random.Random(seed).sample(LETTERS, min(n, len(LETTERS)))
    return {"antonyms": pairs(ANTONYMS)[:n], "capitals": pairs(CAPITALS)[:n],
            "uppercase": [(w, w.upper()) for w in WORDS[:n]], "next_number": numbers(seed, n),
            "next_letter": [(c, chr(ord(c) + 1)) for c in letters], "first_letter": [(w, w[0]) for w in WORDS[:n]],
            "addition": additions(seed, n)}


def suite_prompts(task: list[tuple[str, str]], k: int, seed: int) -> list[str]:
    """One k-shot prompt per pair: k other pairs of the task as demonstrations, then the pair's input."""
    prompts = []
    for q, (text, _) in enumerate(task):
        others = [p for i, p in enumerate(task) if i != q]
        shots = [fill(SUITE_TEMPLATE, x, y) for x, y in random.Random(seed * 1_000_003 + q).sample(others, min(k, len(others)))]
        prompts.append(ICL_SEPARATOR.join(shots + [query_prompt(SUITE_TEMPLATE, text)]))
    return prompts


def task_accuracy(model: EvalModel, task: list[tuple[str, str]], k: int, seed: int, batch_size: int) -> float:
    hits = greedy_matches(model, suite_prompts(task, k, seed), [y for _, y in task], batch_size=batch_size)
    return round(100 * sum(hits) / len(hits), 3)


def icl_suite(model: EvalModel, *, k: int = 4, seed: int = 0, n: int = 20, batch_size: int = 8) -> dict:
    """Per-task greedy exact-match accuracy (pt) and the mean over tasks."""
    per_task = {name: task_accuracy(model, task, k, seed, batch_size) for name, task in suite_tasks(seed, n).items()}
    return {"icl_suite": per_task, "icl_suite_accuracy": round(sum(per_task.values()) / len(per_task), 3),
            "icl_k": k}


def suite_drops(candidate: dict, reference: dict) -> dict:
    """Reference minus candidate, per task and for the mean (pt)."""
    drops = {t: round(reference["icl_suite"][t] - acc, 3) for t, acc in candidate["icl_suite"].items()}
    return {"reference_icl_suite": reference["icl_suite"],
            "reference_icl_suite_accuracy": reference["icl_suite_accuracy"], "icl_suite_drops": drops,
            "icl_suite_drop_pt": round(reference["icl_suite_accuracy"] - candidate["icl_suite_accuracy"], 3)}
