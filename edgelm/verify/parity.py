"""Parity: compare an exported artifact with the torch model it came from, on real text.

Encoders/classifiers: one padded batch through both, compared with `compare_outputs` (max/mean abs diff,
cosine, argmax/label agreement). Decoders: full prompt logits, then greedy decoding through the artifact's KV
cache for `greedy_steps` tokens; tokens must match and each step's logits are compared too, so a broken cache
path cannot hide behind a correct prefill. The pass criteria are `Tolerances` (edgelm.verify.tolerances), which
the quantize stage loosens; `verify_artifact` returns a Verdict, `check_artifact` refuses a failed one.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np

from edgelm.core.errors import EdgelmError
from edgelm.verify.tolerances import Tolerances, misses
from edgelm.verify.verdict import Verdict, cosine_rows


# --- figures -------------------------------------------------------------------------------------------------
def compare_outputs(reference, candidate, task: str) -> dict:
    """Figures for two output arrays of the same shape (logits [.., classes/vocab] or embeddings [.., hidden])."""
    ref = np.asarray(reference, dtype=np.float64)
    cand = np.asarray(candidate, dtype=np.float64)
    if ref.shape != cand.shape:
        raise EdgelmError(f"parity: output shape {list(cand.shape)} differs from the torch model's {list(ref.shape)}")
    diff = np.abs(ref - cand)
    rows_r, rows_c = ref.reshape(-1, ref.shape[-1]), cand.reshape(-1, cand.shape[-1])
    figures = {"max_abs_diff": float(diff.max(initial=0.0)), "mean_abs_diff": float(diff.mean()) if diff.size else 0.0,
               "cosine": float(cosine_rows(rows_r, rows_c).min(initial=1.0)), "n": int(rows_r.shape[0])}
    if task != "feature-extraction":
        agree = float(np.mean(rows_r.argmax(-1) == rows_c.argmax(-1)))
        figures["label_agreement" if task == "sequence-classification" else "argmax_agreement"] = agree
    return figures


def failures(figures: dict, tol: Tolerances) -> list[str]:
    """Human-readable reasons the figures miss the tolerances (empty = pass)."""
    bad = []
    if misses("max_abs_diff", figures.get("max_abs_diff", 0.0), tol.max_abs_diff):
        bad.append(f"max_abs_diff {figures['max_abs_diff']:.3g} > {tol.max_abs_diff:g}")
    if misses("cosine", figures.get("cosine", 1.0), tol.min_cosine):
        bad.append(f"cosine {figures['cosine']:.6f} < {tol.min_cosine:g}")
    agreement = figures.get("label_agreement", figures.get("argmax_agreement"))
    if agreement is not None and misses("agreement", agreement, tol.min_argmax_agreement):
        bad.append(f"argmax agreement {agreement:.3f} < {tol.min_argmax_agreement:g}")
    return bad


# --- artifacts -----------------------------------------------------------------------------------------------
def check_artifact(bundle, artifact_path, format: str, inputs: list[str] | None = None,
                   tolerances: Tolerances | None = None, torch_outputs: dict | None = None) -> dict:
    """Run the artifact and its torch source on `inputs` (texts); returns figures or raises EdgelmError.
    `torch_outputs`: a dict shared by the checks of several artifacts of one model (the export stage's .onnx and
    .ort), so torch computes its side once."""
    from edgelm.models.tasks import output_name

    verdict = verify_artifact(bundle, artifact_path, format, inputs, tolerances, torch_outputs)
    outputs = ", ".join(bundle.module.output_names) if bundle.module is not None else output_name(bundle.task)
    _raise_on(verdict, Path(artifact_path), outputs)
    return verdict.figures


def verify_artifact(bundle, artifact_path, format: str, inputs: list[str] | None = None,
                    tolerances: Tolerances | None = None, torch_outputs: dict | None = None) -> Verdict:
    """The verdict of the artifact against its torch source on `inputs` (texts, default: built-in prose);
    decoders keep torch's side in `torch_outputs` when given (see check_artifact)."""
    tol = tolerances or Tolerances()
    texts = inputs or default_texts(bundle.task)
    if bundle.model is None:
        raise EdgelmError("parity: the bundle holds no torch model to compare the artifact with")
    if bundle.module is None and bundle.task == "causal-lm":
        verdict = _decoder_parity(bundle, Path(artifact_path), format, texts, tol, torch_outputs)
    else:
        judge = _module_parity if bundle.module is not None else _encoder_parity
        verdict = judge(bundle, Path(artifact_path), format, texts, tol)
    verdict.figures["tolerances"] = {k: v for k, v in asdict(tol).items() if v is not None}
    return verdict


def default_texts(task: str) -> list[str]:
    from edgelm.data.readers import calibration_texts

    n = 3 if task == "causal-lm" else 8
    return calibration_texts(n, min_chars=40, max_chars=400, seed=1)


def _encoder_parity(bundle, path: Path, fmt: str, texts: list[str], tol: Tolerances) -> Verdict:
    import torch

    from edgelm.models.tasks import model_input_names, task_module

    names = model_input_names(bundle)
    enc = bundle.tokenizer(texts, padding=True, truncation=True, max_length=128, return_tensors="np")
    feeds = {n: enc[n].astype(np.int64) if n in enc else np.zeros_like(enc["input_ids"], np.int64) for n in names}
    with torch.no_grad():
        reference = task_module(bundle)(*(torch.from_numpy(feeds[n]) for n in names)).numpy()
    run = artifact_runner(path, fmt)
    # chunks of 8 rows: a .pte is traced with a bounded batch dimension (edgelm.export.executorch.MAX_BATCH)
    candidate = np.concatenate([run({n: v[i:i + 8] for n, v in feeds.items()})[0] for i in range(0, len(texts), 8)])
    figures = compare_outputs(reference, candidate, bundle.task)
    return Verdict.of(figures, failures(figures, tol))


def _module_parity(bundle, path: Path, fmt: str, _texts, tol: Tolerances) -> Verdict:
    """A plain module against its artifact on the example inputs and, with dynamic axes, on a longer variant of
    them; every output compared (texts play no part: the module's user gave its inputs)."""
    from edgelm.models.plain import call, flat_outputs, varied_inputs

    spec, run = bundle.module, artifact_runner(path, fmt)
    figs = []
    for args in (spec.example_inputs, varied_inputs(spec)):
        if args is None:
            continue
        reference = [t.numpy() for t in flat_outputs(call(bundle.model, args))]
        candidate = run({n: t.detach().numpy() for n, t in zip(spec.input_names, args)})
        figs += [compare_outputs(r, c, "feature-extraction") for r, c in zip(reference, candidate)]
    figures = merged_figures(figs) | {"inputs": "example_inputs" + (" + varied dynamic dims" if len(figs) > len(spec.output_names) else ""),
                                      "outputs": len(spec.output_names)}
    return Verdict.of(figures, failures(figures, tol))


def _decoder_parity(bundle, path: Path, fmt: str, texts: list[str], tol: Tolerances,
                    torch_outputs: dict | None = None) -> Verdict:
    from edgelm.models.text_tasks import virtual_tokens

    lm, prompt = causal_runner(path, fmt), virtual_tokens(bundle)
    torch_outputs = {} if torch_outputs is None else torch_outputs
    prompt_figs, step_figs, matches, first_mismatch, sample = [], [], 0, None, None
    for text in texts:
        ids = bundle.tokenizer(text, return_tensors="np", truncation=True, max_length=32)["input_ids"].astype(np.int64)
        key = (text, tol.greedy_steps)
        if key not in torch_outputs:
            torch_outputs[key] = (torch_prompt_logits(bundle.model, ids, prompt),
                                  *torch_greedy(bundle.model, ids, tol.greedy_steps, prompt))
        ref_logits, ref_tokens, ref_steps = torch_outputs[key]
        logits, _ = lm.prefill(ids)
        prompt_figs.append(compare_outputs(ref_logits, logits, "causal-lm"))
        tokens, steps = lm.generate(ids, tol.greedy_steps, return_logits=True)
        n = min(len(ref_steps), len(steps))
        step_figs.append(compare_outputs(np.stack(ref_steps[:n]), np.stack(steps[:n]), "causal-lm"))
        if sample is None:
            sample = {"prompt": text[:80], "artifact": bundle.tokenizer.decode(tokens), "torch": bundle.tokenizer.decode(ref_tokens)}
        if tokens == ref_tokens:
            matches += 1
        elif first_mismatch is None:
            at = next(i for i, (a, b) in enumerate(zip(tokens + [-1], ref_tokens + [-2])) if a != b)
            first_mismatch = f"greedy token {at} differs on prompt {text[:40]!r} (artifact {tokens[at:at + 3]}, torch {ref_tokens[at:at + 3]})"
    figures = merged_figures(prompt_figs)
    decode = merged_figures(step_figs)
    figures |= {"decode_max_abs_diff": decode["max_abs_diff"], "decode_cosine": decode["cosine"],
                "decode_argmax_agreement": decode["argmax_agreement"], "greedy_steps": tol.greedy_steps,
                "greedy_match": matches / len(texts), "prompts": len(texts), "sample": sample}
    bad = [f"logits: {b}" for b in failures(figures, tol)]
    bad += [f"decode-step logits (KV cache): {b}" for b in failures(decode, tol)]
    if misses("greedy_match", figures["greedy_match"], tol.min_greedy_match):
        bad.append(first_mismatch or f"greedy match {figures['greedy_match']:.2f} < {tol.min_greedy_match}")
    return Verdict.of(figures, bad)


def merged_figures(figs: list[dict]) -> dict:
    merged = {"max_abs_diff": max(f["max_abs_diff"] for f in figs), "cosine": min(f["cosine"] for f in figs),
              "mean_abs_diff": float(np.mean([f["mean_abs_diff"] for f in figs]))}
    agreements = [f["argmax_agreement"] for f in figs if "argmax_agreement" in f]
    if agreements:
        merged["argmax_agreement"] = float(np.mean(agreements))
    return merged


def _raise_on(verdict: Verdict, path: Path, output: str) -> None:
    verdict.raise_if_failed(f"{path.name}: parity failed on output {output!r}: ", "; the artifact was not published")


# --- torch references ------------------------------------------------------------------------------------------
def torch_prompt_logits(model, ids: np.ndarray, prompt=None) -> np.ndarray:
    """Logits of the real tokens; `prompt` (prompt tuning's virtual-token embeddings) is prepended as PEFT does."""
    import torch

    with torch.no_grad():
        if prompt is not None:
            from edgelm.models.text_tasks import PromptPrefixed

            ids_t = torch.from_numpy(ids)
            return PromptPrefixed(model, prompt, "causal-lm")(ids_t, torch.ones_like(ids_t)).float().numpy()
        return model(input_ids=torch.from_numpy(ids), use_cache=False).logits.float().numpy()


def torch_greedy(model, ids: np.ndarray, steps: int, prompt=None) -> tuple[list[int], list[np.ndarray]]:
    """Greedy tokens with the model's own cache (plain argmax, no generation-config processors). With virtual
    tokens the whole sequence is recomputed each step (no cache), an independent path from the export's."""
    import torch

    tokens, step_logits = [], []
    if prompt is not None:
        seq = ids
        for _ in range(steps):
            last = torch.from_numpy(torch_prompt_logits(model, seq, prompt)[0, -1])
            step_logits.append(last.numpy())
            tokens.append(int(last.argmax()))
            seq = np.concatenate([seq, [[tokens[-1]]]], axis=1).astype(np.int64)
        return tokens, step_logits
    with torch.no_grad():
        out = model(input_ids=torch.from_numpy(ids), use_cache=True)
        for _ in range(steps):
            last = out.logits[0, -1].float()
            step_logits.append(last.numpy())
            token = int(last.argmax())
            tokens.append(token)
            out = model(input_ids=torch.tensor([[token]]), past_key_values=out.past_key_values, use_cache=True)
    return tokens, step_logits


# --- runners ---------------------------------------------------------------------------------------------------
def artifact_runner(path: Path, fmt: str):
    """feeds {name: array} -> list of outputs, for an encoder artifact of any format."""
    if _engine(fmt) == "onnxruntime":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        wanted = {i.name for i in session.get_inputs()}
        return lambda feeds: session.run(None, {k: v for k, v in feeds.items() if k in wanted})
    from edgelm.export.executorch import pte_runner

    return pte_runner(path)


def causal_runner(path: Path, fmt: str):
    """An object with prefill(ids) and generate(ids, n, return_logits=True), for a decoder artifact."""
    if _engine(fmt) == "onnxruntime":
        from edgelm.export.checked import check_session_options
        from edgelm.models.generate import OnnxCausalLM

        return OnnxCausalLM(path, session_options=check_session_options(path))
    if _engine(fmt) == "llama.cpp":
        from edgelm.runtimes.llama_cpp import LlamaCppLM

        return LlamaCppLM(path)
    from edgelm.export.executorch import PteCausalLM

    return PteCausalLM(path)


def _engine(fmt: str) -> str:
    """The library that loads `fmt` (onnxruntime for .onnx and .ort, executorch for .pte)."""
    from edgelm.export.formats import FORMATS

    if fmt not in FORMATS:
        raise EdgelmError(f"parity: unknown artifact format {fmt!r} ({', '.join(FORMATS)})")
    return FORMATS[fmt].engine
