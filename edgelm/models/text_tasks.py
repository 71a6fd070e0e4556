"""Turning examples into training features, scoring label words, and prompt-tuning's virtual tokens.

- classification: `classification_features` (input ids + integer label)
- causal LM: `lm_features` (plain text), `completion_features` (loss on the completion only), `chat_features`
  (loss on the assistant turns only), `label_prompts` (a labelled set as prompt + label-word completion)
- `label_word_accuracy`: zero-/few-shot classification of a causal LM by comparing label-word log-probabilities
- `PromptPrefixed`: a module that prepends learned virtual-token embeddings, so the exported graph carries them;
  the embeddings live in `bundle.extra["prompt_tuning"]` (exact float32, base64) and survive save/load.
"""

from __future__ import annotations

import base64
from typing import Sequence

import torch
from torch import nn

from edgelm.core.errors import EdgelmError

DEFAULT_TEMPLATE = "Review: {text}\nSentiment:"
COMPLETION_COLUMNS = ("completion", "response", "output", "answer", "chosen")
IGNORE = -100


# --- features ---------------------------------------------------------------------------------------------------
def classification_features(tokenizer, texts: Sequence[str], labels: Sequence[int], max_length: int) -> list[dict]:
    if not texts:  # fast tokenizers fail on an empty batch (e.g. distill --augment-copies 0)
        return []
    enc = tokenizer(list(texts), truncation=True, max_length=max_length)
    keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
    return [{**{k: enc[k][i] for k in keys}, "labels": int(label)} for i, label in enumerate(labels)]


def lm_features(tokenizer, texts: Sequence[str], max_length: int) -> list[dict]:
    """Plain text: every token is a target."""
    enc = tokenizer(list(texts), truncation=True, max_length=max_length)
    return [{"input_ids": ids, "attention_mask": [1] * len(ids), "labels": list(ids)}
            for ids in enc["input_ids"] if len(ids) > 1]


def completion_features(tokenizer, prompts: Sequence[str], completions: Sequence[str], max_length: int,
                        add_eos: bool = True) -> list[dict]:
    """Prompt + completion, loss on the completion tokens only; long prompts are cut from the left."""
    eos = [tokenizer.eos_token_id] if add_eos and tokenizer.eos_token_id is not None else []
    features = []
    for prompt, completion in zip(prompts, completions):
        p_ids = tokenizer(prompt)["input_ids"]
        c_ids = (tokenizer(completion, add_special_tokens=False)["input_ids"] + eos)[:max_length - 1]
        p_ids = p_ids[-(max_length - len(c_ids)):]
        ids = p_ids + c_ids
        features.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": [IGNORE] * len(p_ids) + c_ids})
    return features


def chat_features(tokenizer, conversations: Sequence[list[dict]], max_length: int) -> list[dict]:
    """Chat-template conversations; loss on assistant messages only (each found as the text the template adds)."""
    if not getattr(tokenizer, "chat_template", None):
        raise EdgelmError("chat-formatted data (messages) needs a tokenizer with a chat template; "
                          "use prompt/completion columns instead")
    features = []
    for messages in conversations:
        ids, labels = [], []
        for i, message in enumerate(messages):
            if message.get("role") != "assistant":
                continue
            before = _chat_ids(tokenizer, messages[:i], generation_prompt=True)
            after = _chat_ids(tokenizer, messages[: i + 1], generation_prompt=False)
            labels += [IGNORE] * (len(before) - len(labels)) + after[len(before):]
            ids = after
        if not ids:
            raise EdgelmError("a chat example has no assistant message to learn from")
        ids, labels = ids[:max_length], labels[:max_length]
        features.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels})
    return features


def _chat_ids(tokenizer, messages: list[dict], generation_prompt: bool) -> list[int]:
    if not messages:
        return []
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def label_prompts(texts: Sequence[str], labels: Sequence[int], label_words: Sequence[str], template: str):
    """A labelled set as (prompts, completions): completion = ' ' + the label's word."""
    return [format_prompt(t, template) for t in texts], [" " + label_words[y] for y in labels]


def format_prompt(text: str, template: str) -> str:
    if "{text}" not in template:
        raise EdgelmError(f"prompt template {template!r} must contain {{text}}")
    return template.replace("{text}", text)


def resolve_label_words(label_words: Sequence[str] | None, label_names: Sequence[str], source: str) -> list[str]:
    """The words a causal LM answers with, one per label: given, or the label names when they are words."""
    words = list(label_words) if label_words else list(label_names)
    if len(words) != len(label_names):
        raise EdgelmError(f"{source}: {len(label_names)} labels ({', '.join(label_names)}) but {len(words)} label words")
    if any(w.strip().lstrip("-").isdigit() for w in words):
        raise EdgelmError(f"{source}: labels are numbers ({', '.join(label_names)}); a language model needs words: "
                          "pass --label-words, e.g. --label-words negative positive")
    return [w.strip() for w in words]


# --- label-word scoring -----------------------------------------------------------------------------------------
@torch.no_grad()
def label_word_accuracy(module: nn.Module, tokenizer, texts: Sequence[str], labels: Sequence[int],
                        label_words: Sequence[str], template: str, batch_size: int = 16) -> float:
    """Accuracy of argmax over the first token of ' word' for each label, after the prompt.

    `module(input_ids, attention_mask) -> logits [b, seq, vocab]` (edgelm.models.tasks.task_module of a causal LM).
    """
    word_ids = [first_token(tokenizer, " " + w) for w in label_words]
    if len(set(word_ids)) != len(word_ids):
        raise EdgelmError(f"label words {list(label_words)} start with the same token; pick words that differ at the start")
    prompts = [tokenizer(format_prompt(t, template))["input_ids"] for t in texts]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    correct = 0
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        ids, mask = _left_pad([prompts[i] for i in idx], tokenizer.pad_token_id or 0)
        logits = module(input_ids=ids, attention_mask=mask)[:, -1, word_ids]
        correct += sum(int(p == labels[i]) for p, i in zip(logits.argmax(-1).tolist(), idx))
    return correct / max(1, len(texts))


def first_token(tokenizer, text: str) -> int:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if not ids:
        raise EdgelmError(f"label word {text.strip()!r} is empty for this tokenizer; pick another word")
    return ids[0]


def _left_pad(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    longest = max(len(s) for s in seqs)
    ids = torch.tensor([[pad_id] * (longest - len(s)) + s for s in seqs])
    mask = torch.tensor([[0] * (longest - len(s)) + [1] * len(s) for s in seqs])
    return ids, mask


# --- prompt tuning, folded for export -----------------------------------------------------------------------------
def encode_prompt(embeddings: torch.Tensor) -> dict:
    """Virtual-token embeddings [n, hidden] as JSON-safe, exact data for bundle.extra["prompt_tuning"]."""
    data = embeddings.detach().to("cpu", torch.float32).contiguous()
    return {"num_virtual_tokens": data.shape[0], "hidden": data.shape[1], "dtype": "float32",
            "data_b64": base64.b64encode(data.numpy().tobytes()).decode("ascii")}


def decode_prompt(entry: dict) -> torch.Tensor:
    raw = base64.b64decode(entry["data_b64"])
    flat = torch.frombuffer(bytearray(raw), dtype=torch.float32)
    return flat.reshape(entry["num_virtual_tokens"], entry["hidden"]).clone()


class PromptPrefixed(nn.Module):
    """Prepend learned virtual tokens as PEFT prompt tuning does; return logits for the real tokens only
    (causal LM: [b, seq, vocab]; classifier: [b, labels])."""

    def __init__(self, model: nn.Module, prompt: torch.Tensor, task: str):
        super().__init__()
        self.model, self.task = model, task
        self.prompt = nn.Parameter(prompt.to(model.get_input_embeddings().weight.dtype), requires_grad=False)

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        batch, n = input_ids.shape[0], self.prompt.shape[0]
        embeds = self.model.get_input_embeddings()(input_ids)
        embeds = torch.cat([self.prompt.unsqueeze(0).expand(batch, -1, -1), embeds], dim=1)
        mask = torch.cat([attention_mask.new_ones(batch, n), attention_mask], dim=1)
        kwargs = {}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = torch.cat([token_type_ids.new_zeros(batch, n), token_type_ids], dim=1)
        logits = self.model(inputs_embeds=embeds, attention_mask=mask, use_cache=False, **kwargs).logits
        return logits[:, n:] if self.task == "causal-lm" else logits


def virtual_tokens(bundle) -> torch.Tensor | None:
    """Prompt tuning's virtual-token embeddings [n, hidden], or None for a bundle without them."""
    entry = bundle.extra.get("prompt_tuning")
    return decode_prompt(entry) if entry else None


def prefix_cache(model, prompt: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The KV cache the virtual tokens leave behind (positions 0..n-1, batch 1). Real tokens that follow them
    at positions n.. and attend to it get exactly the logits of prepending the embeddings (causal attention)."""
    with torch.no_grad():
        embeds = prompt.to(model.get_input_embeddings().weight.dtype)[None]
        out = model(inputs_embeds=embeds, use_cache=True)
    return [(layer.keys.detach().clone(), layer.values.detach().clone()) for layer in out.past_key_values.layers]


def prompt_prefixed(bundle) -> nn.Module | None:
    """The task module of a prompt-tuned bundle, or None when the bundle carries no virtual tokens."""
    entry = bundle.extra.get("prompt_tuning")
    if not entry or bundle.model is None:
        return None
    return PromptPrefixed(bundle.model, decode_prompt(entry), bundle.task).eval()


# --- data for a fine-tuning run -----------------------------------------------------------------------------------
def load_splits(data, eval_data, max_samples: int | None, eval_fraction: float, seed: int):
    """(train, eval) Examples: --eval-data when given, else a seeded split of --data (eval None at fraction 0)."""
    from edgelm.data.readers import load_examples

    if data is None:
        raise EdgelmError("finetune needs training data: pass --data FILE (CSV/TSV/JSONL/TXT) or set data: in the recipe")
    train = load_chat(data, max_samples) or load_examples(data, max_samples=max_samples)
    if eval_data is not None:
        return train, load_chat(eval_data, None) or load_examples(eval_data)
    if eval_fraction <= 0 or len(train) < 2:
        return train, None
    return train.split(eval_fraction, seed)


def load_chat(spec, max_samples: int | None):
    """Chat data (JSONL rows with a `messages` list and no text column) as Examples, else None."""
    import random

    from edgelm.data.readers import TEXT_COLUMNS, Examples, _read_rows, as_config

    cfg = as_config(spec, max_samples=max_samples)
    if not cfg.path.lower().endswith((".jsonl", ".json")) or cfg.text_column:
        return None
    rows, source = _read_rows(cfg.path)
    if not rows or "messages" not in rows[0] or any(c.lower() in TEXT_COLUMNS for c in rows[0]):
        return None
    bad = next((i for i, r in enumerate(rows) if not isinstance(r.get("messages"), list)
                or not all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in r["messages"])), None)
    if bad is not None:
        raise EdgelmError(f"{source}: row {bad + 1}: messages must be a list of {{role, content}} objects")
    if cfg.max_samples and len(rows) > cfg.max_samples:
        rows = [rows[i] for i in sorted(random.Random(cfg.seed).sample(range(len(rows)), cfg.max_samples))]
    texts = [" ".join(m["content"] for m in r["messages"]) for r in rows]
    return Examples(texts, None, None, source, {"messages": [r["messages"] for r in rows]})


def aligned_labels(train, held_out) -> list[int]:
    """The held-out labels in the training set's label numbering (the two files may name labels differently)."""
    index = {name: i for i, name in enumerate(train.label_names)}
    held_out.require_labels()
    unknown = sorted({held_out.label_names[y] for y in held_out.labels} - set(index))
    if unknown:
        raise EdgelmError(f"{held_out.source}: labels {unknown} do not occur in the training data {train.source}")
    return [index[held_out.label_names[y]] for y in held_out.labels]


def completion_column(examples, wanted: str | None) -> str | None:
    if wanted:
        if wanted not in examples.columns:
            raise EdgelmError(f"{examples.source}: completion column {wanted!r} not found "
                              f"(columns: {', '.join(examples.columns)})")
        return wanted
    return next((c for c in examples.columns for cand in COMPLETION_COLUMNS if c.lower() == cand), None)


def causal_lm_features(tokenizer, examples, *, max_length: int, label_words=None, template: str = DEFAULT_TEMPLATE,
                       completion: str | None = None) -> list[dict]:
    """Features for a causal LM by the data's shape: messages | prompt+completion | labelled | plain text."""
    if "messages" in examples.columns and all(isinstance(m, list) for m in examples.columns["messages"]):
        return chat_features(tokenizer, examples.columns["messages"], max_length)
    column = completion_column(examples, completion)
    if column is not None:
        completions = examples.columns[column]
        bad = next((i for i, c in enumerate(completions) if not isinstance(c, str)), None)
        if bad is not None:
            raise EdgelmError(f"{examples.source}: row {bad + 1}: completion column {column!r} is not text")
        return completion_features(tokenizer, examples.texts, completions, max_length)
    if examples.labels is not None and label_words:
        prompts, answers = label_prompts(examples.texts, examples.labels, label_words, template)
        return completion_features(tokenizer, prompts, answers, max_length, add_eos=False)
    return lm_features(tokenizer, examples.texts, max_length)


@torch.no_grad()
def classifier_accuracy(module: nn.Module, tokenizer, texts: Sequence[str], labels: Sequence[int], input_names,
                        max_length: int = 128, batch_size: int = 64) -> float:
    """Accuracy of a classifier task module (edgelm.models.tasks.task_module) on texts."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    correct = 0
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        enc = tokenizer([texts[i] for i in idx], truncation=True, max_length=max_length, padding=True, return_tensors="pt")
        logits = module(**{k: enc[k] for k in input_names if k in enc})
        correct += sum(int(p == labels[i]) for p, i in zip(logits.argmax(-1).tolist(), idx))
    return correct / max(1, len(texts))
