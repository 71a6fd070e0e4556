"""Data augmentation for distilling into a small student, from the user's own texts (Tang et al. 2019, sec. 3.3):
per word, with mask_prob replace it by the mask token, else with swap_prob by a word drawn from the data's
vocabulary (their POS-guided swap without a tagger: the draw follows word frequency); then, with ngram_prob,
keep only a random n-gram (n in 1..5) of the result. The teacher labels these texts; they carry no hard label.
"""

from __future__ import annotations

import random
from collections.abc import Sequence


def augment(texts: Sequence[str], copies: int, mask_token: str, mask_prob: float = 0.1, swap_prob: float = 0.1,
            ngram_prob: float = 0.25, seed: int = 0) -> list[str]:
    """`copies` new texts per input text, none equal to its source (tried a few times, else left out)."""
    rng = random.Random(seed)
    vocabulary = [w for text in texts for w in text.split()]
    if not vocabulary:
        return []
    made = []
    for text in texts:
        words = text.split()
        tries = [perturb(words, rng, vocabulary, mask_token, mask_prob, swap_prob, ngram_prob) for _ in range(3 * copies)]
        made.extend(list(dict.fromkeys(t for t in tries if t and t != text))[:copies])
    return made


def perturb(words: list[str], rng: random.Random, vocabulary: list[str], mask_token: str, mask_prob: float,
            swap_prob: float, ngram_prob: float) -> str:
    out = [replace(w, rng, vocabulary, mask_token, mask_prob, swap_prob) for w in words]
    if out and rng.random() < ngram_prob:
        n = rng.randint(1, min(5, len(out)))
        start = rng.randint(0, len(out) - n)
        out = out[start:start + n]
    return " ".join(out)


def replace(word: str, rng: random.Random, vocabulary: list[str], mask_token: str, mask_prob: float,
            swap_prob: float) -> str:
    roll = rng.random()
    if roll < mask_prob:
        return mask_token
    if roll < mask_prob + swap_prob:
        return rng.choice(vocabulary)
    return word
