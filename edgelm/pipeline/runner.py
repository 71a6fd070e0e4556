"""Glue between user-facing entry points (recipe runs, single-stage commands) and the pipeline."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from edgelm.data.readers import DataConfig, check_data_source
from edgelm.core.errors import EdgelmError
from edgelm.core.records import StageMetrics
from edgelm.pipeline.gates import check_gates, evaluate_gates
from edgelm.models.bundle import ModelBundle, content_fingerprint
from edgelm.models.loading import load_model
from edgelm.core.io import fingerprint
from edgelm.pipeline.run import (RunSpec, locked, path_fingerprint, recover_swaps, run_one, run_steps,
                                 seed_everything, write_run_json)
from edgelm.pipeline.recipe import Recipe, dump_recipe
from edgelm.core.stage import StageConfig, StageContext


def input_key(model: str | ModelBundle, task, data: DataConfig | None, eval_data: DataConfig | None, seed: int) -> dict:
    return {
        "model": model.source if isinstance(model, ModelBundle) else model, "model_files": model_files_key(model), "task": task,
        "data": data.model_dump() if data else None, "data_files": path_fingerprint(data.path) if data else None,
        "eval_data": eval_data.model_dump() if eval_data else None,
        "eval_files": path_fingerprint(eval_data.path) if eval_data else None, "seed": seed,
    }


def model_files_key(model: str | ModelBundle) -> str:
    """What identifies the input's content: its files' fingerprint, or an in-memory model's weights (and, for a
    plain module, its example inputs and names)."""
    from edgelm.models.loading import resolve_path

    if isinstance(model, ModelBundle):
        return "memory:" + content_fingerprint(model)
    try:
        model_path = resolve_path(model)
    except EdgelmError:
        model_path = None
    return path_fingerprint(str(model_path)) if model_path else model


def run_recipe(recipe: Recipe, out: Path, on_written: Callable[[Path], object] | None = None) -> dict:
    """Run (or resume) a whole recipe into OUT; returns run.json's content. Gates raise GateFailed, after
    `on_written(OUT)` (the deliver layer's report) has run on the new run.json, still under the run's lock."""
    out = Path(out)
    check_run_folder(out)
    check_data_source(recipe.data, "data")
    check_data_source(recipe.eval_data, "eval_data")
    with locked(out):
        (out / "recipe.resolved.yaml").write_text(dump_recipe(recipe))
        key = input_key(recipe.model, recipe.task, recipe.data, recipe.eval_data, recipe.seed)
        spec = RunSpec(
            steps=recipe.steps(), input_key=key, seed=recipe.seed, data=recipe.data, eval_data=recipe.eval_data,
            allow_pickle=recipe.allow_pickle, trust_remote_code=recipe.trust_remote_code,
            load_input=lambda: load_model(recipe.model, task=recipe.task, allow_pickle=recipe.allow_pickle,
                                          trust_remote_code=recipe.trust_remote_code),
        )
        records = run_steps(spec, out)
        gate_rows = evaluate_gates(recipe.gates, records)
        run = write_run_json(out, records, seed=recipe.seed, input_key=key, recipe=recipe.name, gates=gate_rows)
        if on_written is not None:
            on_written(out)
    check_gates(gate_rows)
    return run.model_dump()


def run_single(kind: str, config: StageConfig, model: str | ModelBundle, out: Path, *, task=None, data=None,
               eval_data=None, seed: int = 0, allow_pickle=False, trust_remote_code=False, force=False) -> dict:
    """One stage command (CLI or Python API): OUT itself is the stage folder, published atomically; an up-to-date
    OUT is kept. MODEL is what load_model takes, or an in-memory bundle (a plain nn.Module's)."""
    out = Path(out).resolve()
    check_stage_out(out, model if isinstance(model, str) else "")
    check_data_source(data, "--data")
    check_data_source(eval_data, "--eval-data")
    step_hash = fingerprint([input_key(model, task, data, eval_data, seed), kind, config.model_dump(mode="json")])
    existing = StageMetrics.read(out)
    if out.exists() and any(out.iterdir()) and existing is None and not force:
        raise EdgelmError(f"{out}: exists and is not an edgelm output; choose another -o or pass --force")
    if existing and existing.hash == step_hash and not force:
        return {**existing.model_dump(), "status": "up to date"}
    with locked(out.parent, lock_file=out.parent / f".{out.name}.lock"):
        recover_swaps(out.parent, out.name)
        seed_everything(seed)  # a head the task adds at load (e.g. a classifier) starts from the seed too
        bundle = model if isinstance(model, ModelBundle) else load_model(
            model, task=task, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code)
        ctx = StageContext(workdir=out.parent / f".{out.name}.tmp", data=data, eval_data=eval_data, seed=seed,
                           allow_pickle=allow_pickle, trust_remote_code=trust_remote_code, run_dir=None,
                           initial_bundle=lambda: bundle)
        record, _ = run_one(kind, config, bundle, ctx, out, step_hash)
    return {**StageMetrics.load(out).model_dump(), "status": record.status}


RUN_MARKERS = (".lock", "recipe.resolved.yaml", "run.json")


def check_run_folder(out: Path) -> None:
    """A run folder is new, empty or an earlier edgelm run: a re-run deletes stale `NN-kind` folders in it."""
    if out.exists() and not out.is_dir():
        raise EdgelmError(f"{out}: is a file; -o needs a folder for the run")
    if out.is_dir() and any(out.iterdir()) and not any((out / m).exists() for m in RUN_MARKERS):
        raise EdgelmError(f"{out}: folder exists and is not an edgelm run folder; choose a new or empty -o")


def check_stage_out(out: Path, model: str) -> None:
    """OUT is replaced on publish: never a file, the input model, a folder holding it, home, or the cwd."""
    if out.exists() and not out.is_dir():
        raise EdgelmError(f"{out}: is a file; -o needs a folder")
    protected = [Path.home().resolve(), Path.cwd().resolve(), Path(out.anchor)]
    try:
        source = Path(model).expanduser().resolve()
    except (OSError, RuntimeError):
        source = None
    if source is not None and source.exists():
        protected.append(source)
    for keep in protected:
        if out == keep or out in keep.parents:
            raise EdgelmError(f"{out}: -o would replace {keep} (home, the current folder or the input model); "
                              "choose a new folder")


