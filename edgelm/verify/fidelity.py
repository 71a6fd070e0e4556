"""Quantization parity: the quantized graph against its float source on the same real inputs, with tolerances
suited to quantization (edgelm.verify.tolerances.QUANTIZED_VS_FLOAT) — label agreement for classifiers, cosine
for embeddings, top-1 agreement and perplexity for decoders. Also SQNR, the sensitivity analysis' error measure,
and the teacher-forced parity of a quantized decoder against torch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgelm.verify.feeds import graph_feeds, make_session, text_batches
from edgelm.verify.parity import causal_runner, compare_outputs, default_texts, merged_figures, torch_prompt_logits
from edgelm.verify.tolerances import QUANTIZED_VS_FLOAT, UPPER_BOUNDS, misses
from edgelm.verify.verdict import Verdict, cosine_rows


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


def paired_batches(reference_path: Path, other_path: Path, tokenizer, texts: list[str], batch_size: int = 8,
                   max_length: int = 64):
    """(reference output, other output, attention mask, input ids) per batch of `texts`, both graphs run side by
    side: what `compare_batches` reads, one batch of outputs at a time (a decoder's logits over a 150k vocabulary
    are 0.3 GB per batch: kept for every batch of both graphs, they outweighed the quantized model)."""
    reference, other = make_session(reference_path), make_session(other_path)
    for enc in text_batches(tokenizer, texts, batch_size, max_length):
        values = [s.run(None, graph_feeds(s.get_inputs(), enc))[0].astype(np.float32) for s in (reference, other)]
        yield (*values, enc.get("attention_mask", np.ones_like(enc["input_ids"])), enc["input_ids"])


def sqnr_db(reference: Outputs, other: Outputs) -> float:
    """Signal-to-quantization-noise ratio of the outputs (higher = closer to float)."""
    signal = sum(float((r.astype(np.float64) ** 2).sum()) for r in reference.values)
    noise = sum(float(((r.astype(np.float64) - o) ** 2).sum()) for r, o in zip(reference.values, other.values))
    return _db(signal, noise)


def _db(signal: float, noise: float) -> float:
    return float("inf") if noise == 0 else round(10 * np.log10(signal / noise), 3)


def compare(task: str, reference: Outputs, quantized: Outputs) -> dict:
    """Task-appropriate figures for quantized vs float outputs (a plain module's outputs have no masks or ids)."""
    n = len(reference.values)
    masks, ids = reference.masks or [None] * n, reference.ids or [None] * n
    return compare_batches(task, zip(reference.values, quantized.values, masks, ids, strict=True))


def compare_batches(task: str, batches) -> dict:
    """`compare`'s figures from (reference, quantized, mask, ids) per batch, each batch read once and row by row
    (a row's float64 copy of a decoder's logits is what is held at a time)."""
    signal = noise = max_diff = 0.0
    agree, cos, nll_ref, nll_q = [], [], [], []
    for r_batch, q_batch, mask_batch, ids_batch in batches:
        no_rows = [None] * len(r_batch)
        for r, q, mask, ids in zip(r_batch, q_batch, no_rows if mask_batch is None else mask_batch,
                                   no_rows if ids_batch is None else ids_batch):
            r64 = r.astype(np.float64)
            signal += float((r64 ** 2).sum())
            noise += float(((r64 - q) ** 2).sum())
            max_diff = max(max_diff, float(np.abs(r - q).max()))
            del r64
            if task == "sequence-classification":
                agree.append(r.argmax(-1) == q.argmax(-1))
            elif task == "feature-extraction":
                cos.append(cosine_rows(r.reshape(1, -1), q.reshape(1, -1)))
            else:
                keep = mask[1:].astype(bool)  # positions that predict a real next token
                agree.append((r[:-1].argmax(-1) == q[:-1].argmax(-1))[keep])
                nll_ref.append(_nll(r[None], ids[None])[0][keep])
                nll_q.append(_nll(q[None], ids[None])[0][keep])
    figures = {"sqnr_db": _db(signal, noise), "max_abs_diff": round(max_diff, 6)}
    if task == "sequence-classification":
        figures["label_agreement"] = round(float(np.asarray(agree).mean()), 4)
    elif task == "feature-extraction":
        cos = np.concatenate(cos)
        figures.update(mean_cosine=round(float(cos.mean()), 6), min_cosine=round(float(cos.min()), 6))
    else:
        ppl_ref, ppl_q = float(np.exp(np.concatenate(nll_ref).mean())), float(np.exp(np.concatenate(nll_q).mean()))
        figures.update(top1_agreement=round(float(np.concatenate(agree).mean()), 4), perplexity_float=round(ppl_ref, 4),
                       perplexity_quantized=round(ppl_q, 4), perplexity_ratio=round(ppl_q / ppl_ref, 5))
    return figures


def check(figures: dict, method: str, overrides: dict | None = None) -> Verdict:
    """The verdict on the figures that have a tolerance for this method; its `checks` hold
    {name: {value, tolerance, ok}} (what the quantize stage records)."""
    table = {}
    for name, per_method in QUANTIZED_VS_FLOAT.items():
        if name in figures:
            tol = (overrides or {}).get(name, per_method[method])
            table[name] = {"value": figures[name], "tolerance": tol, "ok": not misses(name, figures[name], tol)}
    return Verdict.of(figures, failures(table), checks=table)


def failures(checks: dict) -> list[str]:
    """`name=value (needs >= tolerance)` for each failed entry of a `check` table."""
    return [f"{n}={c['value']} (needs {'<=' if n in UPPER_BOUNDS else '>='} {c['tolerance']})"
            for n, c in checks.items() if not c["ok"]]


def _nll(logits: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Next-token negative log-likelihood per position [batch, seq-1]."""
    shifted = logits[:, :-1].astype(np.float64)
    shifted = shifted - shifted.max(-1, keepdims=True)
    logz = np.log(np.exp(shifted).sum(-1))
    target = np.take_along_axis(shifted, ids[:, 1:, None], axis=-1)[..., 0]
    return logz - target


def torch_decoder_parity(bundle, path: Path, min_cosine: float, min_argmax_agreement: float, fmt: str = "onnx") -> Verdict:
    """Teacher-forced parity of a quantized KV-cache decoder against torch: the first half of each prompt as
    prefill, the rest fed token by token through the cache, every position compared with torch's logits. (Free
    greedy decoding is not compared: once a quantized model picks another token the contexts differ.)"""
    from edgelm.models.text_tasks import virtual_tokens

    lm = causal_runner(Path(path), fmt)  # onnx/ort: OnnxCausalLM, pte: PteCausalLM (same prefill/decode shape)
    prompt_embeddings = virtual_tokens(bundle)
    prompt, decode, texts = [], [], default_texts("causal-lm")
    for text in texts:
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
    prompt, decode = merged_figures(prompt), merged_figures(decode)
    figures = {"cosine": prompt["cosine"], "argmax_agreement": prompt["argmax_agreement"],
               "decode_cosine": decode["cosine"], "decode_argmax_agreement": decode["argmax_agreement"],
               "prompts": len(texts), "tolerances": {"min_cosine": min_cosine, "min_argmax_agreement": min_argmax_agreement}}
    bad = [f"{k} {figures[k]:.4f} < {min_cosine}" for k in ("cosine", "decode_cosine")
           if misses("cosine", figures[k], min_cosine)]
    bad += [f"{k} {figures[k]:.3f} < {min_argmax_agreement}" for k in ("argmax_agreement", "decode_argmax_agreement")
            if misses("agreement", figures[k], min_argmax_agreement)]
    return Verdict.of(figures, bad)
