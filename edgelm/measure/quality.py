"""Evaluation as plain functions on an `EvalModel`: one forward function (numpy feeds -> numpy output) plus the
tokenizer, so the same metric code scores a torch model and an exported artifact on any runtime.

- classification: accuracy, macro-F1 and per-label recall in percentage points, the confusion matrix, quadratic
  weighted kappa for ordinal (integer) labels
- perplexity: sliding window (window / stride / max tokens) over a text, as in the HF perplexity guide
- KL divergence: of a candidate's next-token distributions from a reference's (mean, p99), top-1 agreement
- embedding fidelity: cosine between a candidate's sentence embeddings and a reference's
- in-context-learning probe: k-shot prompts from a template, the prediction is the label whose whole word sequence
  has the highest log-probability after the prompt (labels sharing a first token are told apart)
- generation parity: greedy continuations of a candidate vs a reference, token by token

`torch_model(bundle)` builds an EvalModel from a bundle's torch model; `edgelm.measure.artifacts` builds one
from an exported artifact through the bench runtimes.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from edgelm.core.errors import EdgelmError
from edgelm.verify.verdict import cosine_rows

Feeds = dict[str, np.ndarray]
ICL_TEMPLATE = "Input: {text}\nLabel: {label}"  # user data, unless a template is given
SENTIMENT_TEMPLATE = "Review: {text}\nSentiment: {label}"  # the built-in sentiment probe
ICL_SEPARATOR = "\n\n"


@dataclass
class EvalModel:
    """What evaluation needs from a model: a batched forward and the tokenizer that feeds it."""

    forward: Callable[[Feeds], np.ndarray]  # logits [B, labels] | embeddings [B, H] | LM logits [B, T, V]
    tokenizer: Any
    input_names: list[str]
    task: str
    name: str = "torch"
    generate: Callable[[list[int], int], list[int]] | None = None  # greedy: prompt ids -> new ids
    info: dict = field(default_factory=dict)

    def encode(self, texts: Sequence[str], max_length: int) -> Feeds:
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="np")
        feeds = {n: np.asarray(enc[n], dtype=np.int64) for n in self.input_names if n in enc}
        if "token_type_ids" in self.input_names and "token_type_ids" not in feeds:  # single segment: all zeros
            feeds["token_type_ids"] = np.zeros_like(feeds["input_ids"])
        return feeds

    def run(self, texts: Sequence[str], max_length: int = 128, batch_size: int = 32) -> np.ndarray:
        """Outputs for texts in their order; batches are formed by length so padding stays small."""
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        outputs: list[np.ndarray | None] = [None] * len(texts)
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            batch = np.asarray(self.forward(self.encode([texts[i] for i in chunk], max_length)))
            for row, i in zip(batch, chunk):
                outputs[i] = row
        return np.stack(outputs) if outputs else np.zeros((0,))


def torch_model(bundle, name: str = "torch") -> EvalModel:
    """EvalModel over a bundle's torch model (the task's exported output: logits or sentence embeddings)."""
    import torch

    from edgelm.models.tasks import model_input_names, task_module

    if bundle.model is None:
        raise EdgelmError(f"{bundle.source}: holds no torch model to evaluate; evaluate its artifact instead")
    module = task_module(bundle)
    names = model_input_names(bundle)

    def forward(feeds: Feeds) -> np.ndarray:
        with torch.no_grad():
            out = module(**{n: torch.from_numpy(feeds[n]) for n in names if n in feeds})
        return out.float().numpy()

    generate = None
    if bundle.task == "causal-lm":
        def generate(prompt_ids: list[int], max_new_tokens: int) -> list[int]:
            ids = torch.tensor([prompt_ids])
            with torch.no_grad():
                out = bundle.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                            do_sample=False, pad_token_id=bundle.tokenizer.pad_token_id)
            return out[0, len(prompt_ids):].tolist()

    return EvalModel(forward, bundle.tokenizer, names, bundle.task, name, generate)


# --- classification -----------------------------------------------------------------------------------------
def classification_scores(predictions: Sequence[int], labels: Sequence[int], label_names: Sequence[str] | None = None,
                          ordinal: bool = False) -> dict:
    """Accuracy and macro-F1 (over the label set seen in either list) in pt, recall per label name (pt), the
    confusion matrix (rows: true label, columns: predicted) and, for ordinal labels, quadratic weighted kappa."""
    pred, gold = np.asarray(predictions), np.asarray(labels)
    if len(pred) != len(gold) or len(gold) == 0:
        raise EdgelmError(f"classification needs as many predictions as labels (got {len(pred)} vs {len(gold)})")
    known = list(label_names or [])
    counts = confusion_counts(pred, gold, max(len(known), int(max(pred.max(), gold.max())) + 1))
    names = known + [str(c) for c in range(len(known), len(counts))]  # ids past the names: their number
    out = {"accuracy": round(100 * float((pred == gold).mean()), 3), "f1": round(100 * macro_f1(pred, gold), 3),
           "n": int(len(gold)), "recall_by_label": recall_by_label(counts, names),
           "confusion_matrix": {"labels": names, "counts": counts.tolist()}}
    kappa = quadratic_weighted_kappa(counts) if ordinal else None
    return {**out, "kappa": kappa} if kappa is not None else out


def macro_f1(pred: np.ndarray, gold: np.ndarray) -> float:
    f1s = []
    for c in sorted(set(gold.tolist()) | set(pred.tolist())):
        tp = int(((pred == c) & (gold == c)).sum())
        denom = int((pred == c).sum() + (gold == c).sum())
        f1s.append(2 * tp / denom if denom else 0.0)
    return float(np.mean(f1s))


def confusion_counts(pred: np.ndarray, gold: np.ndarray, n_labels: int) -> np.ndarray:
    """[true label, predicted label] counts."""
    counts = np.zeros((n_labels, n_labels), dtype=np.int64)
    np.add.at(counts, (gold.astype(np.int64), pred.astype(np.int64)), 1)
    return counts


def recall_by_label(counts: np.ndarray, names: Sequence[str]) -> dict[str, float]:
    """{label name: share of its true examples predicted as it, pt} for the labels that occur."""
    support = counts.sum(1)
    return {names[c]: round(100 * float(counts[c, c] / support[c]), 3) for c in range(len(names)) if support[c]}


def quadratic_weighted_kappa(counts: np.ndarray) -> float | None:
    """Cohen's kappa with weights (i - j)^2: 1 = perfect, 0 = chance; None when chance agreement is perfect too."""
    k = len(counts)
    weights = (np.subtract.outer(np.arange(k), np.arange(k)) ** 2).astype(np.float64)
    expected = np.outer(counts.sum(1), counts.sum(0)) / counts.sum()
    chance = float((weights * expected).sum())
    return round(1 - float((weights * counts).sum()) / chance, 4) if chance else None


def evaluate_classification(model: EvalModel, examples, *, max_length: int = 128, batch_size: int = 32) -> dict:
    examples.require_labels()
    logits = model.run(examples.texts, max_length, batch_size)
    if logits.ndim != 2:
        raise EdgelmError(f"{model.name}: classification expects [batch, labels] logits, got shape {logits.shape}")
    if max(examples.labels) >= logits.shape[1]:
        raise EdgelmError(f"{examples.source}: label {max(examples.labels)} but the model has {logits.shape[1]} outputs")
    predictions = logits.argmax(-1).tolist()
    return {**classification_scores(predictions, examples.labels, examples.label_names, examples.ordinal),
            "predictions": predictions}


# --- embeddings ---------------------------------------------------------------------------------------------
def embedding_fidelity(candidate: EvalModel, reference: EvalModel, texts: Sequence[str], *,
                       max_length: int = 128, batch_size: int = 32) -> dict:
    """Cosine between candidate and reference embeddings of the same texts (1.0 = identical directions)."""
    if not texts:
        raise EdgelmError("embedding fidelity needs at least one text")
    embeddings = [np.asarray(m.run(texts, max_length, batch_size), dtype=np.float64) for m in (candidate, reference)]
    cos = cosine_rows(*embeddings)
    return {"fidelity_cosine_mean": round(float(cos.mean()), 6), "fidelity_cosine_min": round(float(cos.min()), 6),
            "fidelity_cosine_p05": round(float(np.percentile(cos, 5)), 6), "n": len(texts)}


# --- perplexity ---------------------------------------------------------------------------------------------
def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64, copy=False)
    shifted = x - x.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


ROWS_PER_CHUNK = 64  # log-softmax rows at a time: a 512-token window over a 150k vocabulary is 0.6 GB in float64


def row_chunks(*arrays: np.ndarray):
    """The arrays' rows ROWS_PER_CHUNK at a time (same slice of each)."""
    for start in range(0, len(arrays[0]), ROWS_PER_CHUNK):
        yield tuple(a[start:start + ROWS_PER_CHUNK] for a in arrays)


def target_nll(logits: np.ndarray, targets: np.ndarray) -> float:
    """Sum of -log p(target) over the rows of `logits` [n, V] (float64, chunk by chunk)."""
    return -sum(float(log_softmax(rows)[np.arange(len(tgt)), tgt].sum()) for rows, tgt in row_chunks(logits, targets))


def perplexity(model: EvalModel, text: str, *, window: int = 512, stride: int = 256, max_tokens: int = 4096) -> dict:
    """Sliding-window perplexity: each token is scored once, with up to `window` tokens of left context."""
    nll, count = 0.0, 0
    for logits, targets in scored_windows(model, text, window=window, stride=stride, max_tokens=max_tokens):
        nll += target_nll(logits, targets)
        count += len(targets)
    return perplexity_figures(nll, count, window, stride)


def perplexity_figures(nll: float, count: int, window: int, stride: int) -> dict:
    return {"perplexity": round(float(np.exp(nll / count)), 4), "tokens": count, "window": window, "stride": stride}


def scored_windows(model: EvalModel, text: str, *, window: int = 512, stride: int = 256, max_tokens: int = 4096):
    """(logits [n, V], targets [n]) per sliding window, for the tokens that window scores (each token once, with
    up to `window` tokens of left context): the stream perplexity and KL divergence read."""
    if not 0 < stride <= window:
        raise EdgelmError(f"perplexity: stride must be in 1..window ({window}), got {stride}")
    if model.task != "causal-lm":  # an encoder's logits are per label (or an embedding), not per next token
        raise EdgelmError(f"perplexity needs a causal LM; this model's task is {model.task}: use --metric accuracy "
                          "or fidelity")
    ids = np.asarray(model.tokenizer(text, add_special_tokens=False)["input_ids"], dtype=np.int64)[:max_tokens]
    if len(ids) < 2:
        raise EdgelmError("perplexity: the text has fewer than 2 tokens")
    prev_end = 0
    for begin in range(0, len(ids) - 1, stride):
        end = min(begin + window, len(ids))
        chunk = ids[begin:end][None]
        logits = np.asarray(model.forward({"input_ids": chunk, "attention_mask": np.ones_like(chunk)}))[0]
        first_target = max(1, prev_end - begin)  # tokens before prev_end were scored by the previous window
        yield logits[first_target - 1:end - begin - 1], chunk[0, first_target:]
        prev_end = end
        if end == len(ids):
            break


# --- divergence from a reference ------------------------------------------------------------------------------
def next_token_divergence(candidate_logits, reference_logits) -> dict:
    """KL(reference || candidate) of the next-token distributions, per token, and top-1 agreement, from two
    aligned streams of logits arrays [n, V] (any runtime that returns logits): mean and p99 over tokens, in nats
    (as llama.cpp's --kl-divergence reports them)."""
    kl, same = [], []
    for cand, ref in zip(candidate_logits, reference_logits, strict=True):
        for window_kl, window_same, _, _ in window_divergence(np.asarray(cand), np.asarray(ref)):
            kl.append(window_kl)
            same.append(window_same)
    return divergence_figures(kl, same)


def window_divergence(cand: np.ndarray, ref: np.ndarray, targets: np.ndarray | None = None):
    """Per chunk of rows: (KL(ref || cand) per row, top-1 agreement per row, and with `targets` the candidate's and
    the reference's summed -log p(target)), each row's log-softmax computed once for both figures."""
    targets = np.zeros(len(ref), dtype=np.int64) if targets is None else targets
    for c_rows, r_rows, tgt in row_chunks(cand, ref, targets):
        ref_logp, cand_logp = log_softmax(r_rows), log_softmax(c_rows)
        at = np.arange(len(tgt))
        yield ((np.exp(ref_logp) * (ref_logp - cand_logp)).sum(-1), ref_logp.argmax(-1) == cand_logp.argmax(-1),
               -float(cand_logp[at, tgt].sum()), -float(ref_logp[at, tgt].sum()))


def divergence_figures(kl: list[np.ndarray], same: list[np.ndarray]) -> dict:
    if not kl:
        raise EdgelmError("KL divergence: no tokens to compare")
    kl_all, same_all = np.maximum(np.concatenate(kl), 0.0), np.concatenate(same)
    return {"kld_mean": round(float(kl_all.mean()), 6), "kld_p99": round(float(np.percentile(kl_all, 99)), 6),
            "top1_agreement": round(float(same_all.mean()), 4), "kld_tokens": int(len(kl_all))}


def kl_divergence(model: EvalModel, reference: EvalModel, text: str, *, window: int = 512, stride: int = 256,
                  max_tokens: int = 4096) -> dict:
    """`next_token_divergence` of `model` from `reference` over the text, windowed as `perplexity`."""
    windows = dict(window=window, stride=stride, max_tokens=max_tokens)
    logits = lambda m: (row for row, _ in scored_windows(m, text, **windows))  # noqa: E731
    return next_token_divergence(logits(model), logits(reference))


def perplexity_and_divergence(model: EvalModel, reference: EvalModel, text: str, *, window: int = 512,
                              stride: int = 256, max_tokens: int = 4096) -> tuple[dict, dict, dict]:
    """(model's `perplexity`, reference's `perplexity`, `kl_divergence`) from one pass of each model over the text's
    windows: the same figures as the three calls, for half the forward passes."""
    windows = dict(window=window, stride=stride, max_tokens=max_tokens)
    nll = nll_ref = 0.0
    count, kl, same = 0, [], []
    for (cand, targets), (ref, _) in zip(scored_windows(model, text, **windows),
                                          scored_windows(reference, text, **windows), strict=True):
        for window_kl, window_same, cand_nll, ref_nll in window_divergence(cand, ref, targets):
            kl.append(window_kl)
            same.append(window_same)
            nll, nll_ref = nll + cand_nll, nll_ref + ref_nll
        count += len(targets)
    return (perplexity_figures(nll, count, window, stride), perplexity_figures(nll_ref, count, window, stride),
            divergence_figures(kl, same))


# --- in-context learning probe -------------------------------------------------------------------------------
def check_template(template: str) -> str:
    """An ICL template holds {text} once and ends with {label}: the label is what the model continues with."""
    if template.count("{text}") != 1 or not template.endswith("{label}"):
        raise EdgelmError(f"ICL template {template!r} must contain {{text}} once and end with {{label}}, "
                          "e.g. 'Input: {text}\\nLabel: {label}'")
    return template


def fill(template: str, text: str, label: str) -> str:
    """The template with text and label put in (plain replacement: braces in the text stay as they are)."""
    return template.replace("{text}", text.strip()).replace("{label}", label)


def query_prompt(template: str, text: str) -> str:
    """The template up to the label: what the model continues from."""
    return fill(template, text, "").rstrip()


def balanced_demos(by_label: dict[int, list[int]], k: int, rng: random.Random, skip: int | None) -> list[int]:
    """k demo indices drawn per label in turn (balanced), never `skip` (the query itself, leave-one-out)."""
    labels, chosen = sorted(by_label), []
    for j in range(k):
        pool = [i for i in by_label[labels[j % len(labels)]] if i != skip and i not in chosen]
        if pool:
            chosen.append(rng.choice(pool))
    rng.shuffle(chosen)
    return chosen


def icl_prompts(demos, queries, k: int, label_words: Sequence[str], seed: int = 0, leave_one_out: bool = False,
                template: str = ICL_TEMPLATE) -> list[str]:
    """One k-shot prompt per query; demos are drawn per label in turn (balanced), seeded per query."""
    check_template(template)
    by_label: dict[int, list[int]] = {}
    for i, y in enumerate(demos.labels):
        by_label.setdefault(y, []).append(i)
    prompts = []
    for q, text in enumerate(queries.texts):
        chosen = balanced_demos(by_label, k, random.Random(seed * 1_000_003 + q), q if leave_one_out else None)
        shots = [fill(template, demos.texts[i], label_words[demos.labels[i]]) for i in chosen]
        prompts.append(ICL_SEPARATOR.join(shots + [query_prompt(template, text)]))
    return prompts


def label_sequences(tokenizer, words: Sequence[str]) -> list[list[int]]:
    """The tokens of ' word' for each label word; two labels with the same tokens cannot be told apart."""
    seqs = [tokenizer(" " + w.strip(), add_special_tokens=False)["input_ids"] for w in words]
    if any(not s for s in seqs) or len({tuple(s) for s in seqs}) != len(seqs):
        raise EdgelmError(f"ICL label words {list(words)} are empty or tokenize the same; choose distinct words")
    return seqs


def continuation_logprobs(model: EvalModel, prompts: Sequence[str], continuations: Sequence[list[int]], *,
                          max_length: int = 1024, batch_size: int = 8) -> np.ndarray:
    """[prompts, continuations]: sum of the log-probs of each continuation's tokens after each prompt.

    One forward per (prompt, continuation without its last token): all one-token continuations share the prompt's
    own forward; longer ones need their leading tokens fed in."""
    prompt_ids = [model.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    prefixes = sorted({tuple(c[:-1]) for c in continuations})
    rows = [(p, key) for p in range(len(prompts)) for key in prefixes]
    scores = np.zeros((len(prompts), len(continuations)))
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        ids = [(prompt_ids[p] + list(key))[-max_length:] for p, key in chunk]
        logits = np.asarray(model.forward(pad_right(ids, model.tokenizer)))
        for row, (p, key) in enumerate(chunk):
            for c, tokens in enumerate(continuations):
                if tuple(tokens[:-1]) == key:
                    scores[p, c] = sequence_logprob(logits[row], len(ids[row]), tokens)
    return scores


def sequence_logprob(logits: np.ndarray, length: int, tokens: list[int]) -> float:
    """Log-prob of `tokens` as the last len(tokens) targets of a row of `length` inputs (logits at t predict t+1)."""
    m = len(tokens)
    logp = log_softmax(logits[length - m:length])
    return float(logp[np.arange(m), tokens].sum())


def greedy_matches(model: EvalModel, prompts: Sequence[str], answers: Sequence[str], *, max_length: int = 1024,
                   batch_size: int = 8) -> list[bool]:
    """Whether greedy decoding after each prompt starts with ' answer': teacher-forced, the argmax at every answer
    position must be the answer's token (one forward per prompt, no generate needed)."""
    out = []
    for start in range(0, len(prompts), batch_size):
        ids, lengths = [], []
        for prompt, answer in zip(prompts[start:start + batch_size], answers[start:start + batch_size]):
            tokens = model.tokenizer(" " + answer.strip(), add_special_tokens=False)["input_ids"]
            row = model.tokenizer(prompt, add_special_tokens=False)["input_ids"] + tokens
            ids.append(row[-max_length:])
            lengths.append(len(tokens))
        logits = np.asarray(model.forward(pad_right(ids, model.tokenizer)))
        out += [bool((logits[r, len(row) - m - 1:len(row) - 1].argmax(-1) == row[len(row) - m:]).all())
                for r, (row, m) in enumerate(zip(ids, lengths))]
    return out


def icl_probe(model: EvalModel, demos, queries, *, k: int = 4, label_words: Sequence[str] = ("negative", "positive"),
              seed: int = 0, max_length: int = 1024, batch_size: int = 8, leave_one_out: bool = False,
              template: str = ICL_TEMPLATE) -> dict:
    """k-shot accuracy (pt): the label whose whole word sequence is most probable after the prompt wins."""
    demos.require_labels()
    queries.require_labels()
    n_labels = max(max(demos.labels), max(queries.labels)) + 1
    if len(label_words) < n_labels:
        raise EdgelmError(f"ICL probe: {n_labels} labels but only {len(label_words)} label words {list(label_words)}")
    words = list(label_words[:n_labels])
    prompts = icl_prompts(demos, queries, k, words, seed, leave_one_out, template)
    scores = continuation_logprobs(model, prompts, label_sequences(model.tokenizer, words), max_length=max_length,
                                   batch_size=batch_size)
    result = classification_scores(scores.argmax(-1).tolist(), queries.labels)
    return {"icl_accuracy": result["accuracy"], "icl_f1": result["f1"], "icl_k": k, "n": result["n"],
            "label_words": words, "icl_template": template}


def pad_right(rows: Sequence[list[int]], tokenizer) -> Feeds:
    """Right-padded input_ids + attention_mask for token rows of different lengths."""
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = np.full((len(rows), width), pad, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, r in enumerate(rows):
        ids[i, :len(r)], mask[i, :len(r)] = r, 1
    return {"input_ids": ids, "attention_mask": mask}


# --- generation parity ----------------------------------------------------------------------------------------
def generation_parity(candidate: EvalModel, reference: EvalModel, prompts: Sequence[str], *,
                      max_new_tokens: int = 16) -> dict:
    """Greedy continuations compared token by token: share of equal tokens, of identical continuations, and the
    mean length of the common prefix (greedy decoding diverges for good after the first different token)."""
    if candidate.generate is None or reference.generate is None:
        raise EdgelmError("generation parity needs two causal LMs that can generate")
    same, total, exact, prefixes, samples = 0, 0, 0, [], []
    for prompt in prompts:
        ids = candidate.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        got, want = candidate.generate(ids, max_new_tokens), reference.generate(ids, max_new_tokens)
        n = max(len(got), len(want))
        same += sum(a == b for a, b in zip(got, want))
        total += n
        exact += got == want
        prefix = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
        prefixes.append(prefix)
        samples.append({"prompt": prompt, "candidate": candidate.tokenizer.decode(got),
                        "reference": reference.tokenizer.decode(want)})
    return {"greedy_token_match": round(same / max(total, 1), 4), "greedy_exact": round(exact / max(len(prompts), 1), 4),
            "greedy_prefix_mean": round(float(np.mean(prefixes)), 3) if prefixes else 0.0,
            "max_new_tokens": max_new_tokens, "greedy_samples": samples[:3]}
