"""EvalModel over an exported artifact (.onnx / .ort / .pte) run by the bench runtimes, so evaluation scores
exactly what ships. Encoders go through `edgelm.runtimes.base.open_runner`; causal LMs with a KV cache go
through `edgelm.models.generate` (full-sequence logits for perplexity / ICL, greedy decoding for parity)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgelm.core.errors import EdgelmError
from edgelm.core.records import Manifest
from edgelm.measure.quality import EvalModel
from edgelm.runtimes.base import RUNTIMES
from edgelm.export.formats import FORMATS


def evaluated_formats() -> dict[str, tuple[str, ...]]:
    """{runtime: the artifact formats eval can score on it, preferred first} for every runtime that has some."""
    return {name: spec.evaluates for name, spec in RUNTIMES.items() if spec.evaluates}


def artifact_model(bundle, runtime: str) -> EvalModel:
    """EvalModel running the bundle's artifact on `runtime`; a missing runtime or artifact is a clear error."""
    formats = evaluated_formats()
    if runtime not in formats:
        raise EdgelmError(f"eval runtime {runtime!r}: use auto, torch, {', '.join(formats)}")
    fmt = next((f for f in formats[runtime] if f in bundle.artifacts), None)
    if fmt is None:
        raise EdgelmError(f"eval runtime {runtime!r}: the bundle has no {' or '.join(formats[runtime])} "
                          f"artifact (has: {', '.join(bundle.artifacts) or 'none'}); add an export stage before eval")
    artifact = Path(bundle.artifacts[fmt])
    tokenizer = bundle.tokenizer or _tokenizer_beside(artifact)
    manifest = Manifest.read(artifact.parent)
    info = {"artifact": artifact.name, "artifact_format": fmt}
    if bundle.task == "causal-lm":
        return _causal_model(bundle, artifact, runtime, tokenizer, info)
    from edgelm.runtimes.base import open_runner, target_from_bundle

    runner = open_runner(runtime, target_from_bundle(bundle, runtime, artifact.parent))
    names = list(runner.input_names) or (manifest.input_names() if manifest else [])

    def forward(feeds):
        return first_output(runner.run({n: feeds[n] for n in names}))

    return EvalModel(forward, tokenizer, names, bundle.task, runtime, None, info)


def first_output(result) -> np.ndarray:
    if isinstance(result, dict):
        return np.asarray(next(iter(result.values())))
    if isinstance(result, (list, tuple)):
        return np.asarray(result[0])
    return np.asarray(result)




def _tokenizer_beside(artifact: Path):
    from edgelm.models.loading import load_tokenizer

    return load_tokenizer(artifact.parent)


def _causal_model(bundle, artifact: Path, runtime: str, tokenizer, info: dict) -> EvalModel:
    """Full-sequence logits = the graph's prefill on an empty cache; generation = its greedy KV-cache loop."""
    from edgelm.verify.parity import causal_runner

    if FORMATS[info["artifact_format"]].engine not in ("onnxruntime", "llama.cpp"):
        raise EdgelmError(f"eval runtime {runtime!r}: decoder evaluation runs on the ONNX graph or the GGUF; "
                          "use ort-cpu, ort-mobile or llama-cpp")
    lm = causal_runner(artifact, info["artifact_format"])

    def forward(feeds):
        rows = []
        for ids, mask in zip(feeds["input_ids"], feeds["attention_mask"]):
            n = int(mask.sum())  # right padding: run the real tokens, repeat the last logits over the padding
            logits = np.asarray(lm.prefill(ids[:n][None])[0])[0]
            rows.append(np.concatenate([logits, np.repeat(logits[-1:], len(ids) - n, axis=0)]))
        return np.stack(rows)

    def generate(prompt_ids, max_new_tokens):
        return list(lm.generate(np.asarray([prompt_ids], dtype=np.int64), max_new_tokens))[:max_new_tokens]

    return EvalModel(forward, tokenizer, ["input_ids", "attention_mask"], "causal-lm", runtime, generate, info)
