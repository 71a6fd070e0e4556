"""The Python API: one function per command, on the same code path as the CLI (which calls these functions),
with the same options, results and one-line errors.

    import edgelm
    run = edgelm.compress(model, tokenizer=tokenizer, out="runs/minilm")      # an in-memory HF model
    exp = edgelm.export(encoder, example_inputs=(ids, mask), out="out/enc")  # a plain torch.nn.Module

MODEL is what the CLI takes (an HF folder, a .gguf file, a hub id, a built-in name such as "minilm-l6", an
edgelm output folder), a Hugging Face model object with `tokenizer=`, or, for export and quantize (then bench),
a plain `torch.nn.Module` with `example_inputs=`. Stage options are the stage's typed config (`edgelm stages`
lists them), given as keyword arguments or as `config=`. Every function returns the record the CLI's --json
prints and raises `edgelm.EdgelmError` with the CLI's message; a missed gate raises `edgelm.GateFailed`.
"""

from __future__ import annotations

import functools
import inspect
import os
import shutil
import sys
import textwrap
from pathlib import Path
from typing import Any, Sequence, Union

from pydantic import BaseModel, ConfigDict

from edgelm.core.errors import EdgelmError, GateFailed
from edgelm.core.records import GateRow, Manifest, RunRecord, StageMetrics

PathLike = Union[str, "os.PathLike[str]"]
Model = Any  # a PathLike, a transformers PreTrainedModel, or a torch.nn.Module
Data = Any  # a DATA path (CSV/TSV/JSONL/TXT, `name:split`) or an edgelm.data.readers.DataConfig

__all__ = ["info", "export", "quantize", "finetune", "prune", "distill", "lowrank", "stage", "eval", "bench",
           "compress", "search", "run", "StageOutput", "EvalResult", "BenchResult", "CompressResult", "SearchResult"]


# --- results ------------------------------------------------------------------------------------------------
class StageOutput(StageMetrics):
    """What one stage did (its OUT/metrics.json), where it is and whether it ran now ("ran"), was kept
    ("up to date") or resumed. `metrics` holds the stage's figures, `units` their units."""

    out: str
    status: str

    @property
    def path(self) -> Path:
        return Path(self.out)

    @property
    def manifest(self) -> Manifest | None:
        """The export manifest of OUT (inputs, outputs, files, parity), when the stage wrote one."""
        return Manifest.read(self.out)


class _Open(BaseModel):
    """A record whose keys depend on the task: every key is an attribute and an item."""

    model_config = ConfigDict(extra="allow")

    def __getitem__(self, key: str):
        return self.model_dump()[key]

    def get(self, key: str, default=None):
        return self.model_dump().get(key, default)


class EvalResult(_Open):
    """The figures `edgelm eval --json` prints (accuracy, perplexity, icl_accuracy, fidelity_..., by_runtime)."""

    @property
    def units(self) -> dict[str, str]:
        from edgelm.core.metrics import units_of

        return units_of(list(self.model_dump()))


class BenchResult(_Open):
    """The bench JSON (`edgelm bench --json`): machine, versions, settings, one row per artifact x runtime x
    threads x case, the interleaved comparisons and `speedup` by runtime."""

    schema_version: int
    rows: list[dict]
    comparisons: list[dict] = []
    speedup: dict[str, float] = {}

    def markdown(self) -> str:
        """The Markdown tables `edgelm bench` prints."""
        from edgelm.measure.bench_report import bench_markdown

        return bench_markdown(self.model_dump())


class CompressResult(BaseModel):
    """Where `compress` put the run, app bundle and report, with the headline figures and gate rows."""

    model_config = ConfigDict(extra="allow")
    out: str
    recipe: str | None = None
    bundle: str
    report: dict[str, str]
    headline: dict[str, Any]
    gates: list[GateRow] = []

    @property
    def run(self) -> RunRecord:
        """OUT/run.json: every stage's record and the gate verdicts."""
        return RunRecord.load(self.out)


class SearchResult(BaseModel):
    """What `search` found: every trial (parameters, objective values, feasibility, front), the chosen one and
    where it was published (OUT/best, a normal run folder with its bundle) and the search report."""

    model_config = ConfigDict(extra="allow")
    out: str
    study: str
    storage: str
    objectives: list[str]
    directions: list[str]
    runtime: str
    trials: list[dict[str, Any]]
    chosen: int | None
    distinct_candidates: int
    best: str | None
    bundle: str | None
    report: dict[str, str]

    @property
    def run(self) -> RunRecord | None:
        """OUT/best/run.json: the chosen candidate's run, or None when no trial passed the gates."""
        return RunRecord.load(self.best) if self.best else None


# --- inputs -------------------------------------------------------------------------------------------------
def data_config(data: Data | None, text_column=None, label_column=None, max_samples=None, seed: int = 0):
    """DATA as the readers take it (a DataConfig passes through); None stays None."""
    from edgelm.data.readers import DataConfig

    if data is None or isinstance(data, DataConfig):
        return data
    return DataConfig(path=str(data), text_column=text_column, label_column=label_column, max_samples=max_samples, seed=seed)


def model_input(model: Model, tokenizer=None, *, example_inputs=None, input_names=None, output_names=None,
                dynamic_axes=None):
    """MODEL as the pipeline takes it: a path string, or a plain module's bundle. An HF model object is saved
    once (content-addressed, safetensors) so every stage and a re-run see the same folder the CLI would."""
    if isinstance(model, (str, os.PathLike)):
        return str(model)
    if is_hf_model(model):
        return str(save_in_memory(model, tokenizer))
    if "torch" in sys.modules and isinstance(model, sys.modules["torch"].nn.Module):
        from edgelm.models.bundle import ModelBundle

        return ModelBundle.for_module(model, example_inputs, input_names=input_names, output_names=output_names,
                                      dynamic_axes=dynamic_axes)
    raise EdgelmError(f"model: expected a path, a model name, a Hugging Face model or a torch.nn.Module, "
                      f"got {type(model).__name__}")


def is_hf_model(model) -> bool:
    transformers = sys.modules.get("transformers")
    return transformers is not None and isinstance(model, transformers.PreTrainedModel)


def save_in_memory(model, tokenizer) -> Path:
    """The folder an in-memory HF model is saved in: EDGELM_CACHE/memory/<sha of weights, config, tokenizer>."""
    from edgelm.core.ui import info
    from edgelm.models.bundle import tensors_fingerprint
    from edgelm.models.loading import cache_dir

    if tokenizer is None:
        raise EdgelmError(f"{type(model).__name__}: an in-memory Hugging Face model needs tokenizer=... (edgelm "
                          "tokenizes real text for parity, calibration and benchmarks)")
    key = tensors_fingerprint(model.state_dict(), model.config.to_json_string(), type(tokenizer).__name__, len(tokenizer))
    folder = cache_dir() / "memory" / key[:20]
    if not (folder / "config.json").is_file():
        _save_atomically(model, tokenizer, folder)
    info(f"in-memory {type(model).__name__}: saved as {folder} (safetensors) so its stages reload it and a re-run resumes")
    return folder


def _save_atomically(model, tokenizer, folder: Path) -> None:
    from edgelm.models.bundle import save_model

    tmp = folder.with_name(folder.name + f".{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save_model(model, tokenizer, tmp)
    _copy_pooling(Path(getattr(model, "name_or_path", "") or "/nonexistent"), tmp)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)


def _copy_pooling(source: Path, folder: Path) -> None:
    """A sentence-transformers checkpoint's pooling/normalisation files, so the embedding stays the same."""
    for name in ("modules.json", "1_Pooling", "config_sentence_transformers.json"):
        path = source / name
        if path.is_dir():
            shutil.copytree(path, folder / name, dirs_exist_ok=True)
        elif path.is_file():
            shutil.copy2(path, folder / name)


# --- stages -------------------------------------------------------------------------------------------------
def stage(kind: str, model: Model, *, out: PathLike, tokenizer=None, config=None, task: str | None = None,
          data: Data | None = None, eval_data: Data | None = None, text_column: str | None = None,
          label_column: str | None = None, seed: int = 0, allow_pickle: bool = False, trust_remote_code: bool = False,
          force: bool = False, example_inputs=None, input_names: Sequence[str] | None = None,
          output_names: Sequence[str] | None = None, dynamic_axes: dict | None = None, **options) -> StageOutput:
    """Run the stage `kind` (a name `edgelm stages` lists) on MODEL into the folder OUT, as `edgelm KIND` does."""
    from edgelm.pipeline.runner import run_single

    config = stage_config(kind, config, options)
    model = model_input(model, tokenizer, example_inputs=example_inputs, input_names=input_names,
                        output_names=output_names, dynamic_axes=dynamic_axes)
    result = run_single(kind, config, model, Path(out), task=task, seed=seed, force=force,
                        data=data_config(data, text_column, label_column, seed=seed),
                        eval_data=data_config(eval_data, text_column, label_column, seed=seed),
                        allow_pickle=allow_pickle, trust_remote_code=trust_remote_code)
    return StageOutput.model_validate({**result, "out": str(Path(out).resolve())})


STAGE_ARGS_DOC = """\
MODEL: a path or name as the CLI takes it, a Hugging Face model object (give tokenizer=) or, where the stage
accepts one, a plain torch.nn.Module (give example_inputs=). OUT is the stage folder, published atomically;
an OUT already made from the same input and options is kept (status "up to date") unless force=True.

Arguments shared by every stage:
    tokenizer: the tokenizer of an in-memory Hugging Face model
    config / **options: the stage's parameters (its Config, or keywords; listed below)
    task: sequence-classification | feature-extraction | causal-lm (default: detected from the config)
    data, eval_data: DATA (CSV/TSV/JSONL/TXT path or HF `name:split`) for training, calibration, evaluation;
        text_column / label_column override the detected columns; seed: the random seed
    allow_pickle, trust_remote_code: the CLI's safety switches (off)
    example_inputs: a plain module's forward arguments (a tensor or tuple of tensors)
    input_names / output_names: their names in the artifact (default: forward's parameters, output_0, ...)
    dynamic_axes: {name: {axis: dim name}} or {name: [axis, ...]}; other dims stay fixed"""
stage.__doc__ += "\n\n" + STAGE_ARGS_DOC


def stage_config(kind: str, config=None, options: dict | None = None, where: str | None = None):
    """The stage's validated Config from `config` (a Config or a dict) and keyword `options` (they win); a bad
    value is one EdgelmError line starting with `where` (default "edgelm.KIND options")."""
    from edgelm.pipeline.recipe import _validate_config

    if isinstance(config, BaseModel) and not options:
        return config
    base = config.model_dump(exclude_unset=True) if isinstance(config, BaseModel) else dict(config or {})
    return _validate_config(kind, {**base, **(options or {})}, where or f"edgelm.{kind} options")


class command:  # noqa: N801 - reads as the kind of object in help(): "Help on command in module edgelm.api"
    """A public API function. `edgelm.export` is one and also names the subpackage edgelm/export/: attributes
    the function lacks come from the same-named subpackage, so `edgelm.export.onnx` and
    `import edgelm.export.onnx as m` keep working. A descriptor, so help() documents it as a routine."""

    def __init__(self, function):
        functools.update_wrapper(self, function)

    def __call__(self, *args, **kwargs):
        return self.__wrapped__(*args, **kwargs)

    def __get__(self, instance, owner=None):
        return self

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        import importlib.util

        package = f"edgelm.{self.__name__}"
        if importlib.util.find_spec(package) is None:
            raise AttributeError(f"edgelm.{self.__name__} has no attribute {name!r}")
        return getattr(importlib.import_module(package), name)

    def __repr__(self) -> str:
        return f"<edgelm.{self.__name__}: edgelm.api command>"


def _stage_function(kind: str, summary: str) -> command:
    """edgelm.KIND(model, *, out, ...): `stage(KIND, ...)`, its docstring and signature listing the options."""

    def function(model: Model, *, out: PathLike, **kwargs) -> StageOutput:
        return stage(kind, model, out=out, **kwargs)

    function.__name__ = function.__qualname__ = kind
    function.__doc__ = f"{textwrap.fill(summary, 110)}\n\n{STAGE_ARGS_DOC}\n\n{options_doc(kind)}"
    function.__signature__ = _signature(kind)
    return command(function)


def options_doc(kind: str) -> str:
    """`name: type = default` and the help of each field of the stage's Config (the CLI flags' source)."""
    from edgelm.core.stage import get_stage

    fields = get_stage(kind).Config.model_fields
    config = get_stage(kind).Config
    lines = [f"Options (the edgelm {kind} flags; or config=a dict or {config.__module__}.{config.__name__}(...)):"]
    for name, field in fields.items():
        default = field.get_default(call_default_factory=True)
        lines.append(f"    {name}: {_type_text(field.annotation)} = {default!r}\n        {field.description}")
    lines.append("Returns a StageOutput (OUT/metrics.json with status and out). Raises EdgelmError (one line).")
    return "\n".join(lines)


def _type_text(annotation) -> str:
    text = getattr(annotation, "__name__", None) if isinstance(annotation, type) else None
    return text or str(annotation).replace("typing.", "").replace("edgelm.core.registry.", "")


def _signature(kind: str) -> inspect.Signature:
    from edgelm.core.stage import get_stage

    base = inspect.signature(stage).parameters
    params = [p for n, p in base.items() if n not in ("kind", "options")]
    params += [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=f.get_default(call_default_factory=True),
                                 annotation=f.annotation) for n, f in get_stage(kind).Config.model_fields.items()
               if n not in base]
    return inspect.Signature(params, return_annotation=StageOutput)


def _stage_summary(kind: str) -> str:
    from edgelm.core.stage import get_stage

    return get_stage(kind).summary + "."


export = _stage_function("export", _stage_summary("export") + " A plain torch.nn.Module is exported with its "
                         "example_inputs, names and dynamic_axes, and checked against its own outputs.")
quantize = _stage_function("quantize", _stage_summary("quantize") + " MODEL may be an export folder; a plain "
                           "torch.nn.Module (or its export) is fed its example inputs.")
finetune = _stage_function("finetune", _stage_summary("finetune") + " Needs a Hugging Face model.")
prune = _stage_function("prune", _stage_summary("prune") + " Needs a Hugging Face model.")
lowrank = _stage_function("lowrank", _stage_summary("lowrank") + " Needs a Hugging Face model.")
distill = _stage_function("distill", _stage_summary("distill") + " Needs Hugging Face models; teacher= is a MODEL "
                          "path/name (save an in-memory teacher with save_pretrained).")


# --- commands that are not one stage ------------------------------------------------------------------------
def info(model: Model, *, tokenizer=None, task: str | None = None, allow_pickle: bool = False,
         trust_remote_code: bool = False) -> dict[str, Any]:
    """Architecture, task, parameters and shapes of MODEL (`edgelm info MODEL --json`)."""
    from edgelm.models.loading import load_model, model_info

    source = model_input(model, tokenizer)
    if not isinstance(source, str):
        raise EdgelmError("info needs a Hugging Face model (or its folder); a plain torch.nn.Module has no config to describe")
    return model_info(load_model(source, task=task, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code))


def eval(model: Model, *, tokenizer=None, config=None, data: Data | None = None, eval_data: Data | None = None,  # noqa: A001
         reference: Model | None = None, text_column: str | None = None, label_column: str | None = None,
         seed: int = 0, task: str | None = None, allow_pickle: bool = False, trust_remote_code: bool = False,
         **options) -> EvalResult:
    """Evaluate MODEL (a model, a stage folder or a run folder) on its artifact or torch model, as `edgelm eval`.

    `options` (or `config=`) are the eval stage's parameters: metrics (accuracy | fidelity | perplexity | icl |
    generation | icl-suite; default by task), runtime (auto, torch or a runtime name), k_shot, label_words,
    icl_template, max_samples. `reference`: a MODEL to compare with (accuracy_drop_pt, fidelity). Returns the
    figures `edgelm eval --json` prints."""
    from edgelm.stages.eval import evaluate_standalone

    source, ref = _text_model(model, tokenizer, "eval"), _text_model(reference, tokenizer, "eval") if reference is not None else None
    result = evaluate_standalone(source, stage_config("eval", config, options), reference=ref, seed=seed, task=task,
                                 data=data_config(data, text_column, label_column, seed=seed),
                                 eval_data=data_config(eval_data, text_column, label_column, seed=seed),
                                 allow_pickle=allow_pickle, trust_remote_code=trust_remote_code)
    return EvalResult.model_validate(result)


def _text_model(model: Model, tokenizer, command: str) -> str:
    source = model_input(model, tokenizer)
    if not isinstance(source, str):
        raise EdgelmError(f"{command} needs a Hugging Face model (or an edgelm output folder); for a plain "
                          "torch.nn.Module use edgelm.export, edgelm.quantize and edgelm.bench")
    return source


def bench(*outs: PathLike | StageOutput, baseline: PathLike | StageOutput | None = None, json: PathLike | None = None,
          html: PathLike | None = None, md: PathLike | None = None, **settings) -> BenchResult:
    """Time exported artifacts (OUT folders, or the StageOutput of export / quantize) as `edgelm bench` does,
    each runtime in a fresh process.

    `settings` are edgelm.measure.suite.BenchSettings: runtimes (default torch-cpu, ort-cpu), threads, shapes
    (BATCHxSEQ, default 1x128 for encoders), data, max_samples, pad, prompt_len, new_tokens, seconds (per case
    and runtime), compare, speculative ("lookup": greedy vs prompt-lookup rows on prompt_set, default edgelm's
    lookup-prompts.jsonl; draft_tokens, ngram_max). A plain module's export is timed on its example inputs. `baseline`: the folder the
    speedups are against (default: the first OUT when several). `json` / `html` / `md`: also write those files."""
    from edgelm.measure.bench_report import bench_html_body, page
    from edgelm.measure.suite import BenchSettings, run_bench, write_bench_json
    from edgelm.runtimes.base import resolve_target

    if not outs:
        raise EdgelmError("bench: give at least one OUT folder")
    targets = _unique_names([resolve_target(_folder(o)) for o in outs])
    base = resolve_target(_folder(baseline)) if baseline else (targets[0] if len(targets) > 1 else None)
    raw = run_bench(targets, _bench_settings(BenchSettings, settings), baseline=base)
    result = BenchResult.model_validate(raw)
    if json:
        write_bench_json(raw, Path(json))
    if html:
        Path(html).write_text(page("edgelm bench", bench_html_body(raw)))
    if md:
        Path(md).write_text(result.markdown())
    return result


def _bench_settings(cls, settings: dict):
    from pydantic import ValidationError

    from edgelm.pipeline.recipe import describe_validation_error

    try:
        return cls.model_validate({k: v for k, v in settings.items() if v is not None})
    except ValidationError as exc:
        raise EdgelmError(f"edgelm.bench settings.{describe_validation_error(exc)}") from None


def _folder(out) -> Path:
    return Path(out.out) if isinstance(out, StageOutput) else Path(out)


def _unique_names(targets: list) -> list:
    """Same folder name twice (a/export, b/export): the names get their parent folder."""
    names = [t.name for t in targets]
    for t in targets:
        if names.count(t.name) > 1:
            t.name = f"{t.path.parent.name}/{t.name}"
    return targets


def compress(model: Model = None, *, out: PathLike | None = None, tokenizer=None, target: str = "mobile",
             recipe: PathLike | None = None, data: Data | None = None, eval_data: Data | None = None,
             text_column: str | None = None, label_column: str | None = None, seed: int = 0, task: str | None = None,
             max_accuracy_drop: float | None = None, min_speedup: float | None = None,
             max_size_mb: float | None = None, on_parity_fail: str | None = None) -> CompressResult:
    """Compress MODEL (default minilm-l6) for `target` (mobile | cpu | cuda) as `edgelm compress` does: the
    default recipe (or `recipe`), eval, bench, report and an app bundle in OUT (default runs/<model>-<target>).

    Gates: `max_accuracy_drop` (points), `min_speedup` (against the bench baseline on the target runtime),
    `max_size_mb`; a miss raises GateFailed after the bundle and report are written (its `.result` is the
    CompressResult's content). `on_parity_fail` ("error" | "warn") overrides the quantize stages' setting.
    Returns where the run, bundle and report are and the headline figures."""
    from edgelm.deliver.compress import compress as compress_run

    source = _text_model(model, tokenizer, "compress") if model is not None else None
    gates = _gates(target, max_accuracy_drop, min_speedup, max_size_mb)
    out = Path(out) if out else _default_out(model, source, target)
    result = compress_run(source, out, target=target, data=data_config(data, text_column, label_column, seed=seed),
                          eval_data=data_config(eval_data, text_column, label_column, seed=seed),
                          recipe=resolve_recipe_path(Path(recipe)) if recipe else None, task=task, seed=seed,
                          gates=gates or None, on_parity_fail=on_parity_fail)
    return CompressResult.model_validate(result)


def _gates(target: str, max_accuracy_drop=None, min_speedup=None, max_size_mb=None) -> dict:
    from edgelm.pipeline.compress import TARGET_RUNTIMES

    gates = {k: v for k, v in (("max_accuracy_drop", max_accuracy_drop), ("max_size_mb", max_size_mb)) if v is not None}
    if min_speedup is not None:
        gates["min_speedup"] = {"value": min_speedup, "runtime": TARGET_RUNTIMES.get(target, ["?"])[0]}
    return gates


def _default_out(model, source, target: str, suffix: str = "") -> Path:
    name = type(model).__name__.lower() if source is not None and not isinstance(model, (str, os.PathLike)) else source
    return Path("runs") / f"{Path(name or 'minilm-l6').name.split('.')[0]}-{target}{suffix}"


def search(model: Model = None, *, out: PathLike | None = None, tokenizer=None, target: str = "mobile",
           recipe: PathLike | None = None, data: Data | None = None, eval_data: Data | None = None,
           text_column: str | None = None, label_column: str | None = None, seed: int = 0, task: str | None = None,
           budget: str | None = None, trials: int | None = None, storage: str | None = None, study: str | None = None,
           heartbeat: int = 60, max_accuracy_drop: float | None = None, min_speedup: float | None = None,
           max_size_mb: float | None = None) -> SearchResult:
    """Search compression recipes for MODEL as `edgelm search` does: an Optuna study over the recipe's `search:`
    block (or the built-in space of the default recipe for `target`), each trial a real run measured on the target
    runtime; the best feasible candidate on the Pareto front is published as OUT/best with its bundle.

    `budget` ("30m", "90s") is this call's wall time, `trials` caps the study across workers; workers given the
    same `storage` URL (default sqlite in OUT) and `study` name split the trials. Gates as in `compress`."""
    from edgelm.deliver.search import search as search_run

    source = _text_model(model, tokenizer, "search") if model is not None else None
    out = Path(out) if out else _default_out(model, source, target, "-search")
    result = search_run(source, out, target=target, budget=budget, trials=trials, storage=storage, study=study,
                        heartbeat=heartbeat, data=data_config(data, text_column, label_column, seed=seed),
                        eval_data=data_config(eval_data, text_column, label_column, seed=seed),
                        recipe=resolve_recipe_path(Path(recipe)) if recipe else None, task=task, seed=seed,
                        gates=_gates(target, max_accuracy_drop, min_speedup, max_size_mb) or None)
    return SearchResult.model_validate(result)


def run(recipe: PathLike, *, out: PathLike | None = None, overrides: Sequence[str] | dict | None = None) -> RunRecord:
    """Run (or resume) a recipe (a YAML path or a shipped recipe's name) as `edgelm run`: one folder per stage,
    run.json and a report in OUT (default runs/<recipe name>). `overrides`: "key=value" strings (`--set`) or a
    dict {"stages.0.ratio": 0.5}. Returns run.json's record; a missed gate raises GateFailed."""
    return run_into(recipe, out, overrides)[0]


def run_into(recipe: PathLike, out: PathLike | None, overrides) -> tuple[RunRecord, Path]:
    """`run`, and the run folder it chose."""
    from edgelm.core.ui import info
    from edgelm.deliver.report import render_run
    from edgelm.pipeline.recipe import load_recipe
    from edgelm.pipeline.runner import run_recipe

    sets = [f"{k}={v}" for k, v in overrides.items()] if isinstance(overrides, dict) else list(overrides or [])
    parsed = load_recipe(resolve_recipe_path(Path(recipe)), sets)
    out = Path(out) if out else Path("runs") / (parsed.name or Path(recipe).stem)
    if parsed.search is not None:
        info(f"{recipe}: running the recipe as written; its search: block is for `edgelm search --recipe {recipe}`")
    return RunRecord.model_validate(run_recipe(parsed, out, on_written=render_run)), out


def resolve_recipe_path(recipe: Path) -> Path:
    """A recipe path, or the name of a shipped one (`minilm-l6` -> edgelm/recipes/minilm-l6.yaml)."""
    if recipe.exists() or recipe.suffix:
        return recipe
    shipped = Path(__file__).parent / "recipes" / f"{recipe}.yaml"
    return shipped if shipped.exists() else recipe
