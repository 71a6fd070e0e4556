"""Determinism: the same recipe and seed, run twice into two folders, give byte-identical weights, ONNX files,
tokenizers and bundle metadata; JSON files are identical once wall-clock fields (`*seconds`, `finished_at`, ...)
are removed. A different seed changes the weights (the seed is really used)."""

from __future__ import annotations

import json

import yaml

from edgelm.pipeline.recipe import parse_recipe
from edgelm.pipeline.runner import run_recipe

# wall-clock facts: they differ between two runs by nature; everything else must not
CLOCK_KEYS = ("seconds", "finished_at", "created", "_ms", "_s", "load_avg", "rss_mb")
RENDERINGS = ("report.md", "report.html")  # rendered from run.json, which is compared instead


def strip_clock(value):
    if isinstance(value, dict):
        return {k: strip_clock(v) for k, v in value.items() if not k.endswith(CLOCK_KEYS)}
    if isinstance(value, list):
        return [strip_clock(v) for v in value]
    return value


def compare_runs(a, b) -> list[str]:
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file() and p.name != ".lock")
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file() and p.name != ".lock")
    assert files_a == files_b
    differing = []
    for rel in files_a:
        if rel.name in RENDERINGS:
            continue
        left, right = (a / rel).read_bytes(), (b / rel).read_bytes()
        if rel.suffix == ".json":
            left, right = (strip_clock(json.loads(x)) for x in (left, right))
            left, right = (json.dumps(x, sort_keys=True).replace(str(a), "RUN").replace(str(b), "RUN") for x in (left, right))
        if left != right:
            differing.append(str(rel))
    return differing


def run_twice(tmp_path, raw: dict):
    outs = []
    for name in ("a", "b"):
        out = tmp_path / name
        run_recipe(parse_recipe(dict(raw)), out)
        outs.append(out)
    return outs


def test_pipeline_seed_gives_identical_bytes_and_a_new_seed_changes_them(tiny_model, rel_stages, tmp_path):
    raw = {"model": str(tiny_model("llama")), "seed": 11, "stages": [{"kind": rel_stages, "files": 0}] * 2}
    a, b = run_twice(tmp_path, raw)
    assert compare_runs(a, b) == []
    c = tmp_path / "c"
    run_recipe(parse_recipe({**raw, "seed": 12}), c)
    assert (c / "02-rel-noise" / "model.safetensors").read_bytes() != (a / "02-rel-noise" / "model.safetensors").read_bytes()


def test_real_stages_are_byte_identical_across_runs(tiny_model, tmp_path):
    stages = [{"kind": "prune", "heads": 0.5, "ffn": 0.25}, {"kind": "lowrank", "ratio": 0.5},
              {"kind": "export", "formats": ["onnx"], "optimize": False}, {"kind": "quantize", "method": "int8-dynamic"}]
    raw = {"model": str(tiny_model("bert", "sequence-classification")), "seed": 3, "stages": stages}
    a, b = run_twice(tmp_path, raw)
    assert compare_runs(a, b) == []
    for folder in ("01-prune/model.safetensors", "02-lowrank/model.safetensors", "03-export/model.onnx", "04-quantize/model.onnx"):
        assert (a / folder).is_file(), f"{folder} was not written; the comparison would prove nothing"


def test_resolved_recipe_records_the_seed(tiny_model, rel_stages, tmp_path):
    raw = {"model": str(tiny_model("bert")), "seed": 5, "stages": [{"kind": rel_stages, "files": 0}]}
    a, _ = run_twice(tmp_path, raw)
    assert yaml.safe_load((a / "recipe.resolved.yaml").read_text())["seed"] == 5
    assert json.loads((a / "run.json").read_text())["seed"] == 5


def test_a_head_added_at_load_starts_from_the_seed(tiny_model, tmp_path):
    """A recipe `task` that adds a head at load (a classifier on a plain encoder) initialises it from the run's
    seed, not from whatever the process's random state was (two real `edgelm run`s gave different LoRA teachers)."""
    import torch

    raw = {"model": str(tiny_model("bert")), "task": "sequence-classification", "seed": 4,
           "stages": [{"kind": "prune", "ffn": 0.25}]}
    outs = []
    for name, prior in (("a", 123), ("b", 456)):
        torch.manual_seed(prior)  # what earlier work in the process left behind
        run_recipe(parse_recipe(dict(raw)), tmp_path / name)
        outs.append(tmp_path / name / "01-prune" / "model.safetensors")
    assert outs[0].read_bytes() == outs[1].read_bytes()
