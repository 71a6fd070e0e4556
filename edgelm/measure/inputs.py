"""Benchmark inputs, built once in the parent process from real tokens and handed to every worker as .npz:
- fixed shapes: batch x seq_len sweep ("1x128"), real prose cut to exactly seq_len tokens;
- dataset samples: one sentence per call (batch 1), each at its own length — the dataset's length
  distribution — unless padding to the longest is asked for;
- decoder prompts: prompt_len real tokens, then new_tokens greedy steps.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgelm.core.errors import EdgelmError


@dataclass
class Case:
    kind: str  # "fixed" | "data" | "decode"
    label: str
    feeds: list[dict] = field(default_factory=list)  # one feed dict per call (cycled through)
    meta: dict = field(default_factory=dict)  # batch, seq_len, length stats, prompt/generation lengths

    def describe(self) -> dict:
        return {"kind": self.kind, "label": self.label, **self.meta}


def parse_shape(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", str(text))
    if not match or int(match[1]) < 1 or int(match[2]) < 2:
        raise EdgelmError(f"shape {text!r}: write BATCHxSEQ_LEN, e.g. 1x128 (batch >= 1, seq_len >= 2)")
    return int(match[1]), int(match[2])


def _encode(tokenizer, texts: list[str], max_len: int, pad_to: int | None = None) -> dict:
    enc = tokenizer(texts, truncation=True, max_length=pad_to or max_len, padding="max_length" if pad_to else False)
    ids = np.asarray(enc["input_ids"], dtype=np.int64)
    feeds = {"input_ids": ids, "attention_mask": np.asarray(enc["attention_mask"], dtype=np.int64)}
    feeds["token_type_ids"] = np.zeros_like(ids)
    return feeds


def long_prose(tokenizer, min_tokens: int) -> str:
    from edgelm.data.readers import calibration_texts

    text = ""
    for para in calibration_texts(n=256):
        text += " " + para
        if len(tokenizer(text, add_special_tokens=False)["input_ids"]) > min_tokens + 8:
            return text
    raise EdgelmError(f"not enough calibration prose for {min_tokens} tokens")


def fixed_case(tokenizer, batch: int, seq_len: int) -> Case:
    feeds = _encode(tokenizer, [long_prose(tokenizer, seq_len)], max_len=seq_len)
    if feeds["input_ids"].shape[1] != seq_len:
        raise EdgelmError(f"shape {batch}x{seq_len}: the tokenizer produced {feeds['input_ids'].shape[1]} tokens")
    feeds = {k: np.repeat(v, batch, axis=0) for k, v in feeds.items()}
    return Case("fixed", f"b{batch}xs{seq_len}", [feeds], {"batch": batch, "seq_len": seq_len})


def data_case(tokenizer, data, max_samples: int = 200, max_len: int = 128, pad: bool = False, seed: int = 0) -> Case:
    """One call per sampled sentence at its natural length (or all padded to the longest when `pad`)."""
    from edgelm.data.readers import load_examples

    examples = load_examples(data)
    texts = [t for t in examples.texts if t.strip()]
    if not texts:
        raise EdgelmError(f"{examples.source}: no non-empty texts to benchmark with")
    if len(texts) > max_samples:
        texts = random.Random(seed).sample(texts, max_samples)
    lengths = [len(tokenizer(t, truncation=True, max_length=max_len)["input_ids"]) for t in texts]
    pad_to = max(lengths) if pad else None
    feeds = [_encode(tokenizer, [t], max_len=max_len, pad_to=pad_to) for t in texts]
    ordered = sorted(lengths)
    meta = {"batch": 1, "seq_len": pad_to, "samples": len(texts), "source": examples.source, "padded": pad,
            "seq_len_mean": round(sum(lengths) / len(lengths), 2), "seq_len_p50": ordered[len(ordered) // 2],
            "seq_len_p90": ordered[int(len(ordered) * 0.9)], "seq_len_max": ordered[-1]}
    name = Path(examples.source).parent.name + "/" + Path(examples.source).name if examples.source else "data"
    return Case("data", f"data:{name}" + (":padded" if pad else ""), feeds, meta)


def decode_case(tokenizer, prompt_len: int, new_tokens: int) -> Case:
    ids = tokenizer(long_prose(tokenizer, prompt_len), add_special_tokens=False)["input_ids"][:prompt_len]
    prompt = np.asarray([ids], dtype=np.int64)
    return Case("decode", f"p{prompt_len}+g{new_tokens}", [{"input_ids": prompt}],
                {"batch": 1, "seq_len": prompt_len, "prompt_len": prompt_len, "new_tokens": new_tokens})


def lookup_case(tokenizer, new_tokens: int, speculative: dict, prompt_set: str | None = None) -> Case:
    """The speculative-decoding case: every prompt of the set (edgelm.measure.lookup_prompts), generated to EOS or
    new_tokens, by plain greedy and by `speculative` ({"method": "lookup", draft settings}) side by side."""
    from edgelm.measure.lookup_prompts import LOOKUP_PROMPTS, load_prompt_set, uses_chat_template

    prompts = load_prompt_set(tokenizer, prompt_set)
    lengths = [len(p) for p in prompts]
    meta = {"batch": 1, "prompts": len(prompts), "source": str(prompt_set or LOOKUP_PROMPTS.name),
            "chat_template": uses_chat_template(tokenizer), "prompt_len_mean": round(sum(lengths) / len(lengths), 1),
            "prompt_len_max": max(lengths), "new_tokens": new_tokens, "eos_token_id": tokenizer.eos_token_id,
            "speculative": speculative}
    return Case("lookup", f"{speculative['method']}-prompts+g{new_tokens}",
                [{"input_ids": np.asarray([p], dtype=np.int64)} for p in prompts], meta)


def save_cases(cases: list[Case], path: Path) -> list[dict]:
    """Write every feed into one .npz (key "case/call/input"); returns the case descriptions for the worker."""
    arrays = {f"{c}/{i}/{name}": array for c, case in enumerate(cases)
              for i, feeds in enumerate(case.feeds) for name, array in feeds.items()}
    np.savez(path, **arrays)
    return [{**case.describe(), "calls": len(case.feeds)} for case in cases]


def load_feeds(path: Path, descriptions: list[dict]) -> list[list[dict]]:
    with np.load(path) as npz:
        out = [[{} for _ in range(d["calls"])] for d in descriptions]
        for key in npz.files:
            c, i, name = key.split("/", 2)
            out[int(c)][int(i)][name] = npz[key]
    return out
