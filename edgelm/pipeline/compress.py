"""`edgelm compress`'s recipe: the default one for the model's task and the target (or the one given), and the
headline figures of its run. edgelm.deliver.compress runs it and writes the report and the app bundle.

Default recipes live in edgelm/recipes/compress-<encoder|decoder>-<target>[-labelled].yaml:
- encoder, labelled data: fine-tune -> (int8 baseline) -> prune -> distill -> export -> int8 -> eval -> bench
- encoder, no labels: export -> int8 -> fidelity eval -> bench (the label-free path)
- decoder: export with KV cache -> int4 -> perplexity + ICL probe + greedy parity -> decode bench
An encoder's path is said in one line before the run starts (`path_reason`): the label column and its labels, or
the columns seen when there is none.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from edgelm.core.errors import EdgelmError
from edgelm.core.records import RunRecord
from edgelm.pipeline.gates import shipped_stage

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
TARGETS = ("mobile", "cpu", "cuda")
TARGET_RUNTIMES = {"mobile": ["ort-mobile"], "cpu": ["ort-cpu"], "cuda": ["ort-cuda"]}


def detect_task(model: str, task: str | None = None) -> str:
    """The model's task without loading its weights (config / edgelm.json / .gguf)."""
    if task:
        return task
    from edgelm.models.bundle import BUNDLE_FILE, read_meta
    from edgelm.models.loading import detect_task as from_config, load_config, resolve_path

    path = resolve_path(model)
    if path is None:  # a hub id: only its config tells, and that needs the hub; load it the normal way
        from edgelm.models.loading import load_model

        return load_model(model).task
    if path.suffix == ".gguf":
        return "causal-lm"
    if (path / BUNDLE_FILE).is_file():
        return read_meta(path / BUNDLE_FILE)["task"]  # a damaged edgelm.json: one line naming the file
    return from_config(load_config(path), path)


def is_labelled(data) -> bool:
    return data is not None and _examples(data).labels is not None


def _examples(data):
    from edgelm.data.readers import load_examples

    return load_examples(data)


def path_reason(data, labelled: bool, task: str = "feature-extraction") -> str:
    """One line: which default path an encoder takes and why (said before the run starts, never silently)."""
    shipped = "sentence embedder" if task == "feature-extraction" else f"the {task} model as it is"
    if data is None:
        return f"label-free path: no --data given -> {shipped} (int8, fidelity eval)"
    examples = _examples(data)
    if not labelled:
        return (f"label-free path: no label column in {Path(examples.source).name} (columns: "
                f"{', '.join(examples.columns)}) -> {shipped}; name one with --label-column")
    names = examples.label_names
    span = f"{names[0]}-{names[-1]}" if examples.ordinal else ", ".join(names)
    return (f"labelled path: column {examples.label_column!r} has {len(names)} labels ({span}) -> fine-tune a "
            f"{len(names)}-class classifier")


def say_path(data, labelled: bool, task: str) -> None:
    from edgelm.core.ui import info

    info(path_reason(data, labelled, task))


def without_unlabelled_icl(raw: dict, data, eval_data) -> dict:
    """A decoder's ICL probe scores the user's labelled data, never a substitute: a data table without labels
    leaves the probe out of the default recipe, and the run says so in one line."""
    from edgelm.core.ui import info
    from edgelm.stages.eval import is_text_corpus

    tables = [spec for spec in (data, eval_data) if spec is not None and not is_text_corpus(spec)]
    unlabelled = [spec for spec in tables if not is_labelled(spec)]
    metrics = (raw.get("eval") or {}).get("metrics") or []
    if not unlabelled or "icl" not in metrics:
        return raw
    name = Path(str(getattr(unlabelled[0], "path", unlabelled[0]))).name
    info(f"in-context probe left out: {name} has no label column (name one with --label-column to probe your task)")
    return {**raw, "eval": {**raw["eval"], "metrics": [m for m in metrics if m != "icl"]}}


def default_recipe(task: str, target: str, labelled: bool) -> dict:
    """The shipped recipe for (task family, target, labels) as a raw dict."""
    if target not in TARGETS:
        raise EdgelmError(f"--target {target!r}: use one of {', '.join(TARGETS)}")
    family = "decoder" if task == "causal-lm" else "encoder"
    name = f"compress-{family}-{target}" + ("-labelled" if labelled and family == "encoder" else "")
    path = RECIPES / f"{name}.yaml"
    if path.is_file():
        return yaml.safe_load(path.read_text())
    raw = yaml.safe_load((RECIPES / f"compress-{family}-mobile-labelled.yaml").read_text())
    return retarget(raw, target, name)


def retarget(raw: dict, target: str, name: str) -> dict:
    """A mobile recipe for another target: plain .onnx, that target's runtime, fp16 on CUDA."""
    raw = {**raw, "name": name}
    for stage in raw.get("stages", []):
        if stage["kind"] == "export":
            stage["formats"] = ["onnx"]
        if stage["kind"] == "quantize" and target == "cuda":
            stage["method"] = "fp16"
    raw["bench"] = {**(raw.get("bench") or {}), "runtimes": TARGET_RUNTIMES[target]}
    return raw


def build_recipe(model: str | None, *, target: str = "mobile", data=None, eval_data=None, recipe: Path | None = None,
                 task: str | None = None, seed: int = 0, gates: dict | None = None, on_parity_fail: str | None = None):
    """The validated Recipe. An explicit recipe is used as written (CLI values override its model/data)."""
    from edgelm.pipeline.recipe import load_recipe, parse_recipe

    if recipe is not None:
        parsed = load_recipe(recipe, [])
        raw = parsed.model_dump(mode="json", exclude_none=True)
        raw["model"] = model or raw.get("model")
    else:
        model = model or "minilm-l6"
        task = detect_task(model, task)
        labelled = is_labelled(data or eval_data) and task != "causal-lm"
        if task != "causal-lm":
            say_path(data or eval_data, labelled, task)
        raw = default_recipe(task, target, labelled)
        if task == "causal-lm":
            raw = without_unlabelled_icl(raw, data, eval_data)
        raw["model"] = model
        raw.setdefault("task", task)
        if raw["task"] != task and task != "feature-extraction":
            raw["task"] = task
    for key, value in (("data", data), ("eval_data", eval_data)):
        if value is not None:
            raw[key] = value.model_dump() if hasattr(value, "model_dump") else value
    raw["seed"] = seed
    if task is not None and recipe is not None:
        raw["task"] = task
    if gates:
        raw["gates"] = {**(raw.get("gates") or {}), **gates}
    if on_parity_fail:
        raw["stages"] = [s | {"on_parity_fail": on_parity_fail} if s.get("kind") == "quantize" else s
                         for s in raw.get("stages", [])]
    return parse_recipe(raw, f"compress recipe {raw.get('name', '')}".strip())


HEADLINE_KEYS = ("params", "reference_params", "size_mb_float", "compression", "accuracy", "reference_accuracy",
                 "f1", "kappa", "accuracy_drop_pt", "fidelity_cosine_mean", "perplexity", "reference_perplexity", "icl_accuracy",
                 "reference_icl_accuracy", "icl_suite_accuracy", "reference_icl_suite_accuracy", "greedy_token_match",
                 "speedup", "p50_ms")


def headline(run: RunRecord) -> dict:
    """The figures a user reads first: the shipped artifact's size, then accuracy / fidelity / perplexity and speed
    (the latest stage that has them)."""
    found = {}
    for stage in run.stages:
        found.update({key: stage.metrics[key] for key in HEADLINE_KEYS if stage.metrics.get(key) is not None})
    shipped = shipped_stage(run.stages)
    if shipped is not None and shipped.metrics.get("size_mb") is not None:
        found = {"size_mb": shipped.metrics["size_mb"], **found}
    # fp32 ONNX of the (fine-tuned) model before any compression = the float side of the first quantize stage
    fp32 = next((s.metrics.get("size_mb_float") for s in run.stages if s.kind == "quantize"), None)
    if fp32 and found.get("size_mb"):
        found["size_mb_fp32"] = fp32
        found["smaller_than_fp32"] = round(fp32 / found["size_mb"], 3)
    return found

