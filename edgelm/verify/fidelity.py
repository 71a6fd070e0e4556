"""Quantization parity: the quantized graph against its float source on the same real inputs, with tolerances
suited to quantization — label agreement for classifiers, cosine for embeddings, top-1 agreement and perplexity
for decoders. Also SQNR, the sensitivity analysis' error measure."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgelm.verify.feeds import graph_feeds, make_session, text_batches

# Defaults per method (overridable from the stage config): int4 is allowed to drift further than int8.
TOLERANCES = {
    "label_agreement": {"int8-dynamic": 0.95, "int8-static": 0.9, "int4": 0.85, "fp16": 0.99},
    # the worst sentence, not the mean: MiniLM int8-dynamic has mean cosine 0.994 but single prose lines at 0.95-0.98
    "min_cosine": {"int8-dynamic": 0.95, "int8-static": 0.95, "int4": 0.9, "fp16": 0.999},
    "top1_agreement": {"int8-dynamic": 0.8, "int8-static": 0.7, "int4": 0.6, "fp16": 0.95},
    "perplexity_ratio": {"int8-dynamic": 1.05, "int8-static": 1.1, "int4": 1.08, "fp16": 1.01},
}
RATIO_CHECKS = ("perplexity_ratio",)  # upper bounds; the rest are lower bounds


@dataclass
class Outputs:
    values: list[np.ndarray]  # first graph output per batch
    masks: list[np.ndarray]  # attention mask per batch
    ids: list[np.ndarray]


def run_graph(path: Path, tokenizer, texts: list[str], batch_size: int = 8, max_length: int = 64, session=None) -> Outputs:
    session = session or make_session(path)
    inputs = session.get_inputs()
    out = Outputs([], [], [])
    for enc in text_batches(tokenizer, texts, batch_size, max_length):
        out.values.append(session.run(None, graph_feeds(inputs, enc))[0].astype(np.float32))
        out.masks.append(enc.get("attention_mask", np.ones_like(enc["input_ids"])))
        out.ids.append(enc["input_ids"])
    return out


def sqnr_db(reference: Outputs, other: Outputs) -> float:
    """Signal-to-quantization-noise ratio of the outputs (higher = closer to float)."""
    signal = sum(float((r.astype(np.float64) ** 2).sum()) for r in reference.values)
    noise = sum(float(((r.astype(np.float64) - o) ** 2).sum()) for r, o in zip(reference.values, other.values))
    return float("inf") if noise == 0 else round(10 * np.log10(signal / noise), 3)


def compare(task: str, reference: Outputs, quantized: Outputs) -> dict:
    """Task-appropriate figures for quantized vs float outputs."""
    figures = {"sqnr_db": sqnr_db(reference, quantized),
               "max_abs_diff": round(max(float(np.abs(r - q).max()) for r, q in zip(reference.values, quantized.values)), 6)}
    if task == "sequence-classification":
        agree = np.concatenate([r.argmax(-1) == q.argmax(-1) for r, q in zip(reference.values, quantized.values)])
        figures["label_agreement"] = round(float(agree.mean()), 4)
    elif task == "feature-extraction":
        cos = np.concatenate([_cosine(r, q) for r, q in zip(reference.values, quantized.values)])
        figures.update(mean_cosine=round(float(cos.mean()), 6), min_cosine=round(float(cos.min()), 6))
    else:
        agree, nll_ref, nll_q = [], [], []
        for r, q, mask, ids in zip(reference.values, quantized.values, reference.masks, reference.ids):
            keep = mask[:, 1:].astype(bool)  # positions that predict a real next token
            agree.append((r[:, :-1].argmax(-1) == q[:, :-1].argmax(-1))[keep])
            nll_ref.append(_nll(r, ids)[keep])
            nll_q.append(_nll(q, ids)[keep])
        ppl_ref, ppl_q = float(np.exp(np.concatenate(nll_ref).mean())), float(np.exp(np.concatenate(nll_q).mean()))
        figures.update(top1_agreement=round(float(np.concatenate(agree).mean()), 4), perplexity_float=round(ppl_ref, 4),
                       perplexity_quantized=round(ppl_q, 4), perplexity_ratio=round(ppl_q / ppl_ref, 5))
    return figures


def check(figures: dict, method: str, overrides: dict | None = None) -> dict:
    """{name: {value, tolerance, ok}} for the figures that have a tolerance for this method."""
    table = {}
    for name, per_method in TOLERANCES.items():
        if name not in figures:
            continue
        tol = (overrides or {}).get(name, per_method[method])
        value = figures[name]
        ok = value <= tol if name in RATIO_CHECKS else value >= tol
        table[name] = {"value": value, "tolerance": tol, "ok": bool(ok)}
    return table


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1) + 1e-12)


def _nll(logits: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Next-token negative log-likelihood per position [batch, seq-1]."""
    shifted = logits[:, :-1].astype(np.float64)
    shifted = shifted - shifted.max(-1, keepdims=True)
    logz = np.log(np.exp(shifted).sum(-1))
    target = np.take_along_axis(shifted, ids[:, 1:, None], axis=-1)[..., 0]
    return logz - target


def torch_decoder_parity(bundle, path: Path, min_cosine: float, min_argmax_agreement: float, fmt: str = "onnx") -> dict:
    """Teacher-forced parity of a quantized KV-cache decoder against torch: the first half of each prompt as
    prefill, the rest fed token by token through the cache, every position compared with torch's logits. (Free
    greedy decoding is not compared: once a quantized model picks another token the contexts differ.)"""
    from edgelm.verify.parity import causal_runner, compare_outputs, default_texts, torch_prompt_logits

    from edgelm.models.text_tasks import virtual_tokens

    lm = causal_runner(Path(path), fmt)  # onnx/ort: OnnxCausalLM, pte: PteCausalLM (same prefill/decode shape)
    prompt_embeddings = virtual_tokens(bundle)
    prompt, decode = [], []
    for text in default_texts("causal-lm"):
        ids = bundle.tokenizer(text, return_tensors="np", truncation=True, max_length=32)["input_ids"].astype(np.int64)
        reference = torch_prompt_logits(bundle.model, ids, prompt_embeddings)[0]
        half = max(1, ids.shape[1] // 2)
        logits, state = lm.prefill(ids[:, :half])
        prompt.append(compare_outputs(reference[:half], logits[0], "causal-lm"))
        steps = []
        for i in range(half, ids.shape[1]):
            step, state = lm.decode(ids[:, i], state)
            steps.append(step[0, -1])
        if steps:
            decode.append(compare_outputs(reference[half:], np.stack(steps), "causal-lm"))
    figures = {"cosine": min(f["cosine"] for f in prompt), "argmax_agreement": float(np.mean([f["argmax_agreement"] for f in prompt])),
               "decode_cosine": min(f["cosine"] for f in decode), "decode_argmax_agreement": float(np.mean([f["argmax_agreement"] for f in decode])),
               "prompts": len(prompt), "tolerances": {"min_cosine": min_cosine, "min_argmax_agreement": min_argmax_agreement}}
    bad = [f"{k} {figures[k]:.4f} < {min_cosine}" for k in ("cosine", "decode_cosine") if figures[k] < min_cosine]
    bad += [f"{k} {figures[k]:.3f} < {min_argmax_agreement}" for k in ("argmax_agreement", "decode_argmax_agreement")
            if figures[k] < min_argmax_agreement]
    return {**figures, "ok": not bad, **({"error": f"{path.name}: " + "; ".join(bad)} if bad else {})}
