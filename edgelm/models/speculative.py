"""Greedy-exact speculative decoding with prompt-lookup (n-gram) drafting — numpy + onnxruntime only (no torch).

Each step drafts up to `draft_tokens` tokens by finding the context's last n-gram (longest first, `ngram_max`
down to `ngram_min` tokens) earlier in the context (prompt + generated) and copying what followed its most recent
occurrence. The target model then runs the last emitted token and the draft in ONE call of its KV-cache graph
(`lm.extend`); row i of the logits is the greedy token after draft[:i], so the longest prefix of the draft that
matches those argmaxes is accepted, plus the target's own next token. The cache is cut back past the rejected
draft tokens (`lm.truncate`). The emitted tokens are the greedy tokens by construction — each one is the target's
argmax given everything before it; only the number of target calls changes.

`lm` is anything with prefill(ids) -> (logits, state), extend(ids, state) -> (logits, state) and
truncate(state, length) -> state: edgelm.models.generate.OnnxCausalLM.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

METHODS = ("lookup",)


@dataclass(frozen=True)
class LookupSettings:
    draft_tokens: int = 8  # most tokens drafted per step
    ngram_max: int = 3  # longest n-gram looked up
    ngram_min: int = 1  # shortest n-gram looked up

    def as_dict(self) -> dict:
        return {"method": "lookup", **asdict(self)}

    @classmethod
    def from_dict(cls, spec: dict | None) -> "LookupSettings":
        spec = spec or {}
        return cls(**{k: int(spec[k]) for k in ("draft_tokens", "ngram_max", "ngram_min") if spec.get(k) is not None})


@dataclass
class LookupStats:
    steps: int = 0  # target calls after the prefill
    drafted: int = 0  # draft tokens verified
    accepted: int = 0  # draft tokens the target agreed with
    emitted: int = 0  # tokens produced (the prefill's first one included)

    @property
    def acceptance_rate(self) -> float | None:
        return self.accepted / self.drafted if self.drafted else None

    def as_dict(self) -> dict:
        """The counts under their metric names (edgelm.core.metrics)."""
        rate = self.acceptance_rate
        return {"target_calls": self.steps, "drafted_tokens": self.drafted, "accepted_tokens": self.accepted,
                "generated_tokens": self.emitted, "acceptance_rate": None if rate is None else round(rate, 4),
                "tokens_per_call": round((self.emitted - 1) / self.steps, 4) if self.steps else None}

    def add(self, other: "LookupStats") -> None:
        self.steps += other.steps
        self.drafted += other.drafted
        self.accepted += other.accepted
        self.emitted += other.emitted


def lookup_draft(context: np.ndarray, limit: int, ngram_max: int = 3, ngram_min: int = 1) -> list[int]:
    """Up to `limit` tokens that followed the most recent earlier occurrence of the context's last n-gram (the
    longest n that occurs, from ngram_max down to ngram_min); [] when none occurs."""
    size = len(context)
    if limit <= 0:
        return []
    for n in range(min(ngram_max, size - 1), max(ngram_min, 1) - 1, -1):
        # windows starting at 0 .. size-n-1: each has at least one token after it (the tail itself is excluded)
        windows = np.lib.stride_tricks.sliding_window_view(context[:size - 1], n)
        hits = np.flatnonzero((windows == context[size - n:]).all(axis=1))
        if hits.size:
            start = int(hits[-1]) + n
            return context[start:start + limit].tolist()
    return []


class LookupDecoder:
    """Greedy generation over `lm` with prompt-lookup drafts; `stats` holds the last generation's counts, `history`
    every generation's since the decoder was made."""

    def __init__(self, lm, settings: LookupSettings | None = None):
        self.lm, self.settings = lm, settings or LookupSettings()
        self.stats, self.history = LookupStats(), []

    def prefill(self, input_ids):
        """(first greedy token, the state after the prompt)."""
        ids = np.asarray(input_ids).reshape(1, -1)
        logits, state = self.lm.prefill(ids)
        return int(np.argmax(logits[0, -1])), (ids[0], state)

    def finish(self, token: int, started, max_new_tokens: int, eos_token_id: int | None = None) -> list[int]:
        """The greedy tokens from the prefill's `token` on (it included), at most max_new_tokens, stopping after EOS."""
        prompt, state = started
        s, stats = self.settings, LookupStats(emitted=1)
        context = np.empty(len(prompt) + max_new_tokens, dtype=np.int64)
        context[:len(prompt)] = prompt
        context[len(prompt)] = token
        size, tokens = len(prompt) + 1, [token]
        while len(tokens) < max_new_tokens and token != eos_token_id:
            draft = lookup_draft(context[:size], min(s.draft_tokens, max_new_tokens - len(tokens) - 1),
                                 s.ngram_max, s.ngram_min)
            logits, state = self.lm.extend([token, *draft], state)
            greedy = np.argmax(logits[0], axis=-1)
            accepted = 0
            while accepted < len(draft) and draft[accepted] == greedy[accepted]:
                accepted += 1
            if accepted < len(draft):  # the cache holds token + draft; keep token + the accepted part
                state = self.lm.truncate(state, state.attention_mask.shape[1] - (len(draft) - accepted))
            stats.steps, stats.drafted, stats.accepted = stats.steps + 1, stats.drafted + len(draft), stats.accepted + accepted
            for new in [*draft[:accepted], int(greedy[accepted])]:
                tokens.append(new)
                context[size] = new
                size += 1
                token = new
                if new == eos_token_id:
                    break
        stats.emitted = len(tokens)
        self.stats = stats
        self.history.append(stats)
        return tokens

    def generate(self, input_ids, max_new_tokens: int, eos_token_id: int | None = None) -> list[int]:
        """Greedy tokens for one prompt, as OnnxCausalLM.generate returns them."""
        if max_new_tokens <= 0:
            return []
        token, started = self.prefill(input_ids)
        return self.finish(token, started, max_new_tokens, eos_token_id)


class GreedyDecoder:
    """Plain greedy decoding behind the same prefill / finish protocol, over a generator of the bench protocol
    (prefill(ids) -> (token, state), decode(token, state) -> (token, state)): the side-by-side reference."""

    def __init__(self, generator):
        self.generator = generator

    def prefill(self, input_ids):
        return self.generator.prefill(np.asarray(input_ids).reshape(1, -1))

    def finish(self, token: int, state, max_new_tokens: int, eos_token_id: int | None = None) -> list[int]:
        tokens = [token]
        while len(tokens) < max_new_tokens and token != eos_token_id:
            token, state = self.generator.decode(token, state)
            tokens.append(token)
        return tokens


def decoder_for(lm, spec: dict | None):
    """The decoder a manifest's `postprocessing.speculative` entry asks for (None or {} : plain greedy)."""
    if not spec:
        from edgelm.models.generate import OnnxGenerator

        return GreedyDecoder(OnnxGenerator(lm))
    if spec.get("method") not in METHODS:
        raise ValueError(f"speculative method {spec.get('method')!r}: this edgelm knows {', '.join(METHODS)}")
    return LookupDecoder(lm, LookupSettings.from_dict(spec))
