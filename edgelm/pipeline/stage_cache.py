"""Finished stages shared between runs by resume hash: a search trial that changes only its last stages restores
the earlier ones instead of re-running them (a fine-tune, a distillation).

The cache is a folder of `<hash>/` stage folders, hard-linked (no copy of the weights; ONNX external-data files are
copied, since onnx refuses to read a hard-linked one as a possible hard-link attack) and published by one rename,
so concurrent workers can share it: the first to finish a stage wins, the others throw their copy away. Only a
run's finished *prefix* is restored, in place, so the relative paths stage folders keep to each other hold.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from edgelm.core.records import StageMetrics
from edgelm.pipeline.recipe import Recipe
from edgelm.pipeline.run import chain_hashes, stage_names
from edgelm.pipeline.runner import input_key


def link_or_copy(source: str, target: str) -> None:
    """copytree's copy function: a hard link, except for ONNX external data (`*.data`), which onnx will not read
    through a file with several links."""
    if source.endswith(".data"):
        shutil.copy2(source, target)
    else:
        os.link(source, target)


def recipe_stages(recipe: Recipe) -> list[tuple[str, str]]:
    """(stage folder, resume hash) for each step of the recipe, as run_recipe will compute them."""
    steps = recipe.steps()
    key = input_key(recipe.model, recipe.task, recipe.data, recipe.eval_data, recipe.seed)
    return list(zip(stage_names(steps), chain_hashes(key, steps)))


def is_finished(folder: Path, step_hash: str) -> bool:
    stage = StageMetrics.read(folder)
    return stage is not None and stage.hash == step_hash


def restore(cache: Path, out: Path, stages: list[tuple[str, str]]) -> int:
    """Copy the cached prefix of `stages` into the run folder OUT; returns how many stages it holds now."""
    for i, (name, step_hash) in enumerate(stages):
        target = out / name
        if is_finished(target, step_hash):
            continue
        if not is_finished(cache / step_hash, step_hash):
            return i
        shutil.rmtree(target, ignore_errors=True)
        out.mkdir(parents=True, exist_ok=True)
        shutil.copytree(cache / step_hash, target, copy_function=link_or_copy)
    return len(stages)


def store(cache: Path, out: Path, stages: list[tuple[str, str]]) -> int:
    """Add OUT's finished stages to the cache; returns how many were new."""
    added = 0
    for name, step_hash in stages:
        if not is_finished(out / name, step_hash) or is_finished(cache / step_hash, step_hash):
            continue
        added += _publish_copy(out / name, cache / step_hash)
    return added


def _publish_copy(source: Path, final: Path) -> int:
    tmp = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.tmp")
    shutil.copytree(source, tmp, copy_function=link_or_copy)
    try:
        os.rename(tmp, final)  # fails when another worker published the same stage first
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        return 0
    return 1
