"""Every pass threshold of edgelm's verification, in one place: per kind of check, and per quantization method
where quantization loosens it. None switches a check off. Upper bounds are named in UPPER_BOUNDS; every other
figure must reach its threshold."""

from __future__ import annotations

from dataclasses import dataclass

UPPER_BOUNDS = ("max_abs_diff", "perplexity_ratio")

# --- an exported artifact against its torch source (edgelm.verify.parity) ------------------------------------
# float export: the same math reordered, so nearly bitwise
FLOAT_ARTIFACT = dict(max_abs_diff=1e-3, min_cosine=0.9999, min_argmax_agreement=1.0, min_greedy_match=1.0)
GREEDY_STEPS = 16
# quantized export: agreement and cosine, not bitwise closeness (the per-method rows below override these)
QUANTIZED_ARTIFACT = dict(max_abs_diff=None, min_cosine=0.98, min_argmax_agreement=0.9, min_greedy_match=None)
# quantized artifact against torch, per method: looser than quantized-vs-float, since both errors add up;
# min_cosine is of the worst row (see QUANTIZED_VS_FLOAT)
QUANTIZED_VS_TORCH = {"int8-dynamic": dict(min_cosine=0.95, min_argmax_agreement=0.9),
                      "int8-static": dict(min_cosine=0.95, min_argmax_agreement=0.85),
                      "int4": dict(min_cosine=0.9, min_argmax_agreement=0.75),
                      "fp16": dict(min_cosine=0.999, min_argmax_agreement=0.98)}

# --- a quantized graph against its float graph (edgelm.verify.fidelity), per figure and method -----------------
# int4 is allowed to drift further than int8; the quantize stage's --tolerance NAME=VALUE overrides one figure
QUANTIZED_VS_FLOAT = {
    "label_agreement": {"int8-dynamic": 0.95, "int8-static": 0.9, "int4": 0.85, "fp16": 0.99},
    # the worst sentence, not the mean: MiniLM int8-dynamic has mean cosine 0.994 but single prose lines at 0.95-0.98
    "min_cosine": {"int8-dynamic": 0.95, "int8-static": 0.95, "int4": 0.9, "fp16": 0.999},
    "top1_agreement": {"int8-dynamic": 0.8, "int8-static": 0.7, "int4": 0.6, "fp16": 0.95},
    "perplexity_ratio": {"int8-dynamic": 1.05, "int8-static": 1.1, "int4": 1.08, "fp16": 1.01},
}

# --- the shipped bundle on the device against the build machine's run of the same files (edgelm.deliver.selftest) --
# the same artifact under other kernels (ARM NEON, XNNPACK, another ORT build): labels and greedy tokens identical,
# numbers close; tokenizer drift or a broken kernel moves them far past these
BUNDLE_SELF_TEST = dict(max_abs_diff=0.05, min_cosine=0.999)


@dataclass(frozen=True)
class Tolerances:
    """Pass criteria of an artifact-vs-torch check; the defaults are FLOAT_ARTIFACT's."""

    max_abs_diff: float | None = FLOAT_ARTIFACT["max_abs_diff"]
    min_cosine: float | None = FLOAT_ARTIFACT["min_cosine"]
    min_argmax_agreement: float | None = FLOAT_ARTIFACT["min_argmax_agreement"]  # label (classifiers) / top-1 (decoders)
    greedy_steps: int = GREEDY_STEPS
    min_greedy_match: float | None = FLOAT_ARTIFACT["min_greedy_match"]  # share of prompts whose greedy tokens match

    @classmethod
    def quantized(cls, **overrides) -> "Tolerances":
        """QUANTIZED_ARTIFACT's criteria, with overrides (a QUANTIZED_VS_TORCH row)."""
        return cls(**(QUANTIZED_ARTIFACT | overrides))


def misses(name: str, value: float, limit: float | None) -> bool:
    """Whether figure `name` misses its threshold (None: the check is off). NaN misses every threshold."""
    if limit is None:
        return False
    return not (value <= limit if name in UPPER_BOUNDS else value >= limit)

# --- a GGUF on llama.cpp against its torch source (edgelm.verify.gguf), per tensor type ------------------------
# F32: the same weights, llama.cpp's own kernels (SmolLM2 measured: max |diff| 0.016 prompt / 0.020 decode); 4-bit types: the int4 row of QUANTIZED_VS_TORCH
GGUF_VS_TORCH = {"F32": dict(max_abs_diff=5e-2, min_cosine=0.9999, min_argmax_agreement=1.0, min_greedy_match=1.0),
                 "F16": dict(max_abs_diff=None, min_cosine=0.999, min_argmax_agreement=0.98, min_greedy_match=None),
                 "BF16": dict(max_abs_diff=None, min_cosine=0.998, min_argmax_agreement=0.95, min_greedy_match=None),
                 "Q8_0": dict(max_abs_diff=None, min_cosine=0.99, min_argmax_agreement=0.9, min_greedy_match=None)}
GGUF_4BIT = dict(max_abs_diff=None, min_greedy_match=None, **QUANTIZED_VS_TORCH["int4"])
# without llama.cpp: the GGUF read back (gguf.GGUFReader, dequantized) against the weights written, worst tensor's
# RMS error relative to its RMS
GGUF_WEIGHT_REL_RMSE = {"F32": 1e-6, "F16": 1e-3, "BF16": 1e-2, "Q8_0": 0.02}
GGUF_WEIGHT_REL_RMSE_4BIT = 0.3
