"""Parity of a GGUF against its torch source: on llama.cpp (the llama-cpp runtime) the decoder parity every
artifact gets (prompt logits, greedy tokens through the KV cache), at the tolerance of the GGUF's tensor type
(4-bit types: teacher-forced at the int4 gate, as the ONNX int4 artifact);
without llama.cpp, the weights read back through gguf.GGUFReader and dequantized against what was written,
and the runtime check recorded as skipped with the reason."""

from __future__ import annotations

import numpy as np

from edgelm.core.errors import EdgelmError
from edgelm.verify.tolerances import (GGUF_4BIT, GGUF_VS_TORCH, GGUF_WEIGHT_REL_RMSE, GGUF_WEIGHT_REL_RMSE_4BIT,
                                      QUANTIZED_VS_TORCH, Tolerances)


def gguf_tolerances(gguf_type: str, greedy_steps: int) -> Tolerances:
    return Tolerances(greedy_steps=greedy_steps, **GGUF_VS_TORCH.get(gguf_type, GGUF_4BIT))


def check_gguf(bundle, written, texts: list[str] | None, greedy_steps: int, strict: bool = True) -> dict:
    """Figures of the GGUF (`export_gguf`'s GgufInfo) against the torch model. A miss raises EdgelmError when
    `strict`, else is recorded (`ok` False and `error`), as the quantize stage's --on-parity-fail decides."""
    from edgelm.runtimes.base import RUNTIMES
    from edgelm.verify.parity import verify_artifact

    figures = {"weights": weight_roundtrip(bundle, written)}
    reason = RUNTIMES.get("llama-cpp").unavailable()
    if reason:
        return figures | {"llama_cpp": f"skipped: {reason}"}
    verdict = verify_artifact(bundle, written.path, "gguf", texts, gguf_tolerances(written.type, greedy_steps))
    if written.type not in GGUF_VS_TORCH:
        verdict = teacher_forced_4bit(bundle, written.path, verdict)
    before = f"{written.path.name} ({written.type}) on llama.cpp: parity failed: "
    if strict:
        verdict.raise_if_failed(before, "; the artifact was not published")
    return figures | verdict.recorded(before)


def teacher_forced_4bit(bundle, path, free_running):
    """A 4-bit GGUF is judged like the ONNX int4 artifact: teacher-forced logits (prefill, then the torch prompt's
    tokens fed one by one through the KV cache) at the int4 gate. Free greedy decoding is kept as figures only:
    once a 4-bit model picks another token the contexts differ and later logits cannot be compared."""
    from edgelm.verify.fidelity import torch_decoder_parity

    verdict = torch_decoder_parity(bundle, path, fmt="gguf", **QUANTIZED_VS_TORCH["int4"])
    verdict.figures["free_greedy"] = {k: free_running.figures[k] for k in ("greedy_steps", "greedy_match", "sample")
                                      if k in free_running.figures}
    return verdict


def weight_roundtrip(bundle, written) -> dict:
    """Worst relative RMS error of a tensor read back from the file against the float weights written."""
    import gguf

    from edgelm.export.gguf import check_exportable, gguf_tensors

    shapes = check_exportable(bundle.model)
    expected = dict(gguf_tensors(bundle.model, shapes, written.arch))
    reader = gguf.GGUFReader(str(written.path))
    names = {t.name for t in reader.tensors}
    if names != set(expected):
        raise EdgelmError(f"{written.path.name}: tensors {sorted(names ^ set(expected))[:3]} differ from the model's")
    worst, where = 0.0, None
    for tensor in reader.tensors:
        back = gguf.quants.dequantize(tensor.data, tensor.tensor_type).reshape(expected[tensor.name].shape)
        error = relative_rmse(expected[tensor.name], back)
        worst, where = (error, tensor.name) if error > worst else (worst, where)
    limit = GGUF_WEIGHT_REL_RMSE.get(written.type, GGUF_WEIGHT_REL_RMSE_4BIT)
    if not worst <= limit:
        raise EdgelmError(f"{written.path.name}: tensor {where} reads back with relative RMS error {worst:.3g} > {limit:g}")
    return {"tensors": len(names), "max_rel_rmse": worst, "worst_tensor": where, "limit": limit}


def relative_rmse(reference: np.ndarray, candidate: np.ndarray) -> float:
    ref = reference.astype(np.float64)
    return float(np.sqrt(np.mean((ref - candidate) ** 2)) / max(np.sqrt(np.mean(ref ** 2)), 1e-12))
