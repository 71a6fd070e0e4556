"""Tiny compress runs shared by the bundle and consumer tests (each built once per test session)."""

from __future__ import annotations

from pathlib import Path

import yaml

_RUNS: dict[str, dict] = {}

# export only (no quantization) so the consumer's outputs can be compared with the float torch model exactly
RECIPES = {
    "classifier": {"name": "tiny-classifier", "stages": [{"kind": "export", "formats": ["onnx", "ort"]}],
                   "eval": {"metrics": ["accuracy"], "runtime": ["auto", "ort-cpu", "torch"]}},
    "generator": {"name": "tiny-generator", "stages": [{"kind": "export", "formats": ["onnx"], "greedy_steps": 4}],
                  "eval": {"metrics": ["perplexity", "generation"], "ppl_max_tokens": 32, "gen_tokens": 4}},
    "embedder": {"name": "tiny-embedder", "stages": [{"kind": "export", "formats": ["onnx"]}]},
}
TINY_MODELS = {"classifier": ("bert", "sequence-classification"), "generator": ("llama", None), "embedder": ("bert", None)}
LABELLED = "label\tsentence\n" + "\n".join(f"{i % 2}\t{'a great fun movie' if i % 2 else 'a boring bad film'}" for i in range(12)) + "\n"


def tiny_run(kind: str, tiny_model, tmp_path_factory) -> dict:
    """compress() result for a tiny model with a test recipe: {"out", "bundle", "model_dir", ...}."""
    if kind not in _RUNS:
        from edgelm.deliver.compress import compress

        base = tmp_path_factory.mktemp(f"compress-{kind}")
        recipe = base / "recipe.yaml"
        recipe.write_text(yaml.safe_dump(RECIPES[kind]))
        data = base / "data.tsv"
        data.write_text(LABELLED)
        model = tiny_model(*TINY_MODELS[kind])
        result = compress(str(model), base / "run", recipe=recipe, eval_data=str(data) if kind == "classifier" else None)
        _RUNS[kind] = {**result, "model_dir": Path(model)}
    return _RUNS[kind]
