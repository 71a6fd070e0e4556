"""The prompt set of the speculative-decoding bench: extraction, rewriting, reformatting and code-edit requests
whose answers repeat their input, where prompt-lookup drafting applies (edgelm/recipes/lookup-prompts.jsonl, one
JSON object {"task", "prompt"} per line; written for edgelm, not taken from a dataset).

Each prompt is rendered as a single user turn with the tokenizer's chat template when it has one (an instruct
model answers the request), else as the plain text and a newline."""

from __future__ import annotations

import json
from pathlib import Path

from edgelm.core.errors import EdgelmError

LOOKUP_PROMPTS = Path(__file__).resolve().parents[1] / "recipes" / "lookup-prompts.jsonl"


def read_prompt_set(path: str | Path | None = None) -> list[dict]:
    path = Path(path) if path else LOOKUP_PROMPTS
    try:
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, ValueError) as exc:
        raise EdgelmError(f"{path}: cannot read the prompt set ({type(exc).__name__}: {exc})") from None
    if not rows or not all(isinstance(r, dict) and isinstance(r.get("prompt"), str) for r in rows):
        raise EdgelmError(f"{path}: a prompt set is one JSON object with a \"prompt\" string per line")
    return rows


def uses_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def render(tokenizer, prompt: str) -> str:
    if uses_chat_template(tokenizer):
        return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True)
    return prompt + "\n"


def load_prompt_set(tokenizer, path: str | Path | None = None) -> list[list[int]]:
    """Token ids of every prompt of the set, rendered for the model (see the module docstring)."""
    return [tokenizer(render(tokenizer, row["prompt"]), add_special_tokens=not uses_chat_template(tokenizer))["input_ids"]
            for row in read_prompt_set(path)]
