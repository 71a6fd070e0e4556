"""The `edgelm` command: a thin click group. Stage commands are generated from each stage's typed config, so
a parameter added to a stage appears on the CLI, in recipes and in `edgelm stages` at once.

Exit codes: 0 ok · 2 bad input (one line, no traceback unless --debug) · 3 gate failed · 1 internal error.
"""

from __future__ import annotations

import json
import os
import sys
import typing
from pathlib import Path

import click

from edgelm.core.errors import EdgelmError, GateFailed, StageFailed
from edgelm.core.registry import Choices, choices_of
from edgelm.runtimes.base import RUNTIMES
from edgelm.stages.eval import Metric as EvalMetric

SCHEMA_VERSION = 1


# --- error handling ---------------------------------------------------------------------------------------
class EdgelmGroup(click.Group):
    def add_command(self, cmd, name=None):
        console_options(cmd)  # every command takes --quiet / --verbose too
        super().add_command(cmd, name)

    def invoke(self, ctx):
        debug = "--debug" in sys.argv or bool(os.environ.get("EDGELM_DEBUG"))
        try:
            return super().invoke(ctx)
        except GateFailed as exc:
            _print_gate_table(exc.table)
            _fail(str(exc), exc.exit_code, debug)
        except EdgelmError as exc:
            _fail(str(exc), exc.exit_code, debug)
        except StageFailed as exc:
            cause = exc.cause
            code = cause.exit_code if isinstance(cause, EdgelmError) else 1
            hint = "" if isinstance(cause, EdgelmError) or debug else " (internal error; re-run with --debug for the traceback)"
            _fail(f"stage {exc.stage} failed: {type(cause).__name__}: {cause}{hint}".splitlines()[0], code, debug)
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise
        except BrokenPipeError:  # `edgelm info ... | head`: the reader left; nothing to report
            sys.stderr.close()
            os._exit(0)
        except KeyboardInterrupt:
            _fail("interrupted; finished stages are kept and a re-run resumes", 130, debug)
        except Exception as exc:  # a bug: say so in one line
            _fail(f"internal error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} "
                  "(re-run with --debug for the traceback)", 1, debug)


def _fail(message: str, code: int, debug: bool):
    if debug:
        import traceback

        traceback.print_exc()
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _print_gate_table(rows):
    if rows:
        click.echo(f"{'gate':<40} {'target':<16} {'measured':<14} ok", err=True)
        for r in rows:
            click.echo(f"{r['gate']:<40} {r['target']:<16} {str(r['measured']):<14} {'yes' if r['ok'] else 'NO'}", err=True)


def _set_console(ctx, param, value):
    """--quiet / --verbose, on the group or on any command (`edgelm compress --quiet`)."""
    from edgelm.core.ui import set_verbosity

    if value:
        set_verbosity(param.name)
    return value


def console_options(f):
    f = click.option("-v", "--verbose", is_flag=True, expose_value=False, is_eager=True, callback=_set_console,
                     help="also show third-party log lines, warnings and prints")(f)
    f = click.option("-q", "--quiet", is_flag=True, expose_value=False, is_eager=True, callback=_set_console,
                     help="print only errors and the final result lines")(f)
    return f


@click.group(cls=EdgelmGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="show tracebacks")
@click.version_option(package_name="edgelm")
@console_options
def main(debug):
    """edgelm: compress, export, verify and benchmark language models for phones and edge boxes."""
    from edgelm.core.ui import quiet_libraries

    quiet_libraries()


def emit_json(data: dict) -> None:
    click.echo(json.dumps({"schema_version": SCHEMA_VERSION, **data}, indent=2, default=str))


# --- options shared by model-taking commands ----------------------------------------------------------------
def model_options(f):
    f = click.option("--task", type=click.Choice(["sequence-classification", "feature-extraction", "causal-lm"]),
                     help="override the task detected from the config")(f)
    f = click.option("--allow-pickle", is_flag=True, help="allow pickle weights (they can execute code)")(f)
    f = click.option("--trust-remote-code", is_flag=True, help="run model code shipped with the checkpoint")(f)
    return f


def data_options(f):
    f = click.option("--data", help="DATA: CSV/TSV/JSONL/TXT file or HF dataset name:split")(f)
    f = click.option("--eval-data", help="held-out evaluation DATA")(f)
    f = click.option("--text-column", help="text column (auto-detected by default)")(f)
    f = click.option("--label-column", help="label column (auto-detected by default)")(f)
    f = click.option("--seed", type=int, default=0, show_default=True, help="random seed")(f)
    return f


# --- stage commands generated from configs ------------------------------------------------------------------
class GreedyOption(click.Option):
    """`--format onnx ort pte`: a list option that also takes the values that follow it."""

    def add_to_parser(self, parser, ctx):
        super().add_to_parser(parser, ctx)
        for name in self.opts:
            opt = parser._long_opt.get(name) or parser._short_opt.get(name)
            if opt is None:
                continue
            original = opt.process

            def process(value, state, original=original):
                values = [value]
                while state.rargs and not state.rargs[0].startswith("-"):
                    values.append(state.rargs.pop(0))
                for v in values:
                    original(v, state)

            opt.process = process


class RegistryChoice(click.Choice):
    """The names of a registry, read when shown (help, completion), so an entry registered after this module was
    imported is offered too. Values pass through: the command checks them and says what is wrong in one line."""

    def __init__(self, registry):
        self.registry = registry
        super().__init__(())

    @property
    def choices(self):
        return self.registry.names()

    @choices.setter
    def choices(self, value):  # click.Choice.__init__ assigns it; the registry is the source
        pass

    def convert(self, value, param, ctx):
        return value


def _registry_choices(field) -> tuple[str, ...] | None:
    """A `Name(registry)` field: pydantic moves the Annotated metadata into `field.metadata`."""
    found = [m for m in field.metadata if isinstance(m, Choices)]
    return found[0].names() if found else None


def _choice_type(annotation, metadata=()) -> click.ParamType | None:
    """A Literal's values, or a registry's names read when shown (an entry registered later is offered too)."""
    if typing.get_origin(annotation) is typing.Literal:
        return click.Choice([str(a) for a in typing.get_args(annotation)])
    found = [m for m in (*metadata, *getattr(annotation, "__metadata__", ())) if isinstance(m, Choices)]
    return RegistryChoice(found[0].registry) if found else None


def _field_option(name: str, field) -> click.Option:
    extra = field.json_schema_extra or {}
    flag = extra.get("cli", "--" + name.replace("_", "-"))
    ann = field.annotation
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        inner = [a for a in args if a is not type(None)]
        ann = inner[0] if len(inner) == 1 else str
        origin, args = typing.get_origin(ann), typing.get_args(ann)
    help_text = field.description or ""
    if ann is bool:
        base = flag[2:]
        return click.Option([f"--{base}/--no-{base}", name], default=None, help=help_text)
    if origin is list:
        choice = _choice_type(args[0] if args else str)
        return GreedyOption([flag, name], multiple=True, type=choice, help=help_text + " (several allowed)")
    choice = _choice_type(ann, field.metadata)
    if choice is not None:
        return click.Option([flag, name], type=choice, default=None, help=help_text)
    click_type = {int: int, float: float}.get(ann, str)
    return click.Option([flag, name], type=click_type, default=None, help=help_text)


def add_stage_command(kind: str, command_name: str | None = None):
    from edgelm.core.stage import get_stage

    stage = get_stage(kind)
    fields = stage.Config.model_fields
    params = [click.Argument(["model"], metavar="MODEL"),
              click.Option(["-o", "--out", "out"], required=True, type=click.Path(path_type=Path), help="output folder"),
              click.Option(["--force"], is_flag=True, help="replace an existing OUT"),
              click.Option(["--json", "as_json"], is_flag=True, help="print the result as JSON")]
    params += [_field_option(n, f) for n, f in fields.items()]

    def callback(model, out, force, as_json, task, allow_pickle, trust_remote_code, data, eval_data, text_column,
                 label_column, seed, **stage_kwargs):
        from edgelm import api

        given = {k: (list(v) if isinstance(v, tuple) else v) for k, v in stage_kwargs.items()
                 if v is not None and not (isinstance(v, tuple) and not v)}
        config = api.stage_config(kind, None, given, where=f"edgelm {kind} options")
        result = api.stage(kind, model, out=out, config=config, task=task, data=data, eval_data=eval_data,
                           text_column=text_column, label_column=label_column, seed=seed, allow_pickle=allow_pickle,
                           trust_remote_code=trust_remote_code, force=force)
        if as_json:
            emit_json({"out": str(out), **{k: v for k, v in result.model_dump().items() if k != "out"}})
        else:
            click.echo(f"{kind}: {result.status} -> {out}")

    cmd = click.Command(command_name or kind, params=params, callback=callback,
                        help=f"{stage.summary}.")
    cmd = data_options(model_options(cmd))
    main.add_command(cmd)


OWN_COMMANDS = ("eval", "bench")  # stages whose command takes OUT folders or a metric, not one MODEL


def _add_stage_commands() -> None:
    from edgelm.core.stage import all_stages

    for kind in all_stages():
        if kind not in OWN_COMMANDS:
            add_stage_command(kind)


_add_stage_commands()


# --- commands that are not a single stage -------------------------------------------------------------------
@main.command()
@click.argument("model", metavar="MODEL")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@model_options
def info(model, as_json, task, allow_pickle, trust_remote_code):
    """Architecture, task, parameters and shapes of MODEL."""
    from edgelm import api

    facts = api.info(model, task=task, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code)
    if as_json:
        emit_json(facts)
        return
    for key, value in facts.items():
        click.echo(f"{key:>16}: {value}")


@main.command()
@click.argument("recipe", type=click.Path(path_type=Path))
@click.option("-o", "--out", type=click.Path(path_type=Path), help="run folder (default: runs/<recipe name>)")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="override a recipe key, e.g. stages.0.ratio=0.5")
@click.option("--json", "as_json", is_flag=True, help="print run.json")
def run(recipe, out, overrides, as_json):
    """Run (or resume) a recipe: one folder per stage, run.json and a report."""
    from edgelm import api

    result, out = api.run_into(recipe, out, overrides)
    if as_json:
        emit_json(result.model_dump())
    else:
        _print_card(out)
        click.echo(f"run finished: {out} (report: {out / 'report.md'})")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def stages(as_json):
    """Registered stage kinds with their parameters and help."""
    from edgelm.core.stage import all_stages

    table = {}
    for kind, stage in all_stages().items():
        table[kind] = {"summary": stage.summary,
                       "parameters": {n: {"type": _type_name(f), "default": f.get_default(call_default_factory=True),
                                          "help": f.description} for n, f in stage.Config.model_fields.items()}}
    if as_json:
        emit_json({"stages": table})
        return
    for kind, entry in table.items():
        click.echo(f"{kind}: {entry['summary']}")
        for name, p in entry["parameters"].items():
            click.echo(f"    {name} = {p['default']!r}  [{p['type']}]  {p['help']}")


def _type_name(field) -> str:
    names = _registry_choices(field)
    if names:
        return "one of " + " | ".join(names)
    annotation = field.annotation
    item = typing.get_args(annotation)[0] if typing.get_origin(annotation) is list else None
    if item is not None and typing.get_origin(item) is typing.Annotated and choices_of(item):
        return "list of " + " | ".join(choices_of(item))
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


@main.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path), metavar="RUN_DIR...")
@click.option("--compare", is_flag=True, help="put the runs side by side in one page (-o) instead of re-rendering")
@click.option("-o", "--out", type=click.Path(path_type=Path), default=Path("compare.html"), show_default=True,
              help="the --compare page (its .md lands beside it)")
def report(run_dirs, compare, out):
    """Re-render report.md/report.html of RUN_DIR (or the .md/.html of a bench JSON) from its JSON;
    --compare RUN_A RUN_B ... renders runs side by side."""
    from edgelm.core.errors import EdgelmError
    from edgelm.deliver.report import render_compare, render_path

    if not compare and len(run_dirs) > 1:
        raise EdgelmError("one RUN_DIR at a time; add --compare to put several runs side by side")
    for path in render_compare(run_dirs, out) if compare else render_path(run_dirs[0]):
        click.echo(str(path))


# --- bench_command (issue 4) --------------------------------------------------------------------------------
@main.command("bench", context_settings={"show_default": True})
@click.argument("outs", nargs=-1, required=True, metavar="OUT...")
@click.option("--runtime", "runtimes", cls=GreedyOption, multiple=True, type=RegistryChoice(RUNTIMES),
              help="runtimes to time (several allowed) [default: torch-cpu ort-cpu]")
@click.option("--threads", cls=GreedyOption, multiple=True, type=int, help="intra-op threads (several allowed) "
              "[default: runtime default; ort-mobile 1 2 4]")
@click.option("--shapes", cls=GreedyOption, multiple=True, help="fixed BATCHxSEQ shapes [default: 1x128 for encoders]")
@click.option("--data", help="DATA whose sentences are timed one per call at their own lengths")
@click.option("--max-samples", type=int, default=200, help="dataset sentences to time")
@click.option("--pad", is_flag=True, help="pad dataset sentences to the longest one")
@click.option("--prompt-len", type=int, default=32, help="decoder prompt tokens")
@click.option("--new-tokens", type=int, default=128, help="decoder tokens generated per timed run")
@click.option("--seconds", type=float, default=5.0, help="time budget per case and runtime")
@click.option("--rounds", type=click.IntRange(1, 20), default=1, help="interleaved rounds: each (artifact, runtime, "
              "threads) worker once per round, a fresh process each; rows report the median over rounds")
@click.option("--baseline", type=click.Path(path_type=Path), help="folder the speedups are against [default: the first OUT when several]")
@click.option("--no-compare", is_flag=True, help="skip the interleaved baseline comparison")
@click.option("--speculative", type=click.Choice(["lookup"]), help="decoders: also time greedy vs prompt-lookup "
              "speculative decoding on the prompt set (rows with acceptance rate and speedup)")
@click.option("--prompt-set", type=click.Path(exists=True, dir_okay=False), help="JSONL prompts for --speculative "
              "[default: edgelm's lookup-prompts.jsonl]")
@click.option("--draft-tokens", type=click.IntRange(1, 64), default=8, help="--speculative: most tokens drafted per step")
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="write the bench JSON here")
@click.option("--html", "html_path", type=click.Path(path_type=Path), help="write the HTML report here")
@click.option("--md", "md_path", type=click.Path(path_type=Path), help="write the Markdown report here")
def bench_command(outs, runtimes, threads, shapes, data, max_samples, pad, prompt_len, new_tokens, seconds, rounds,
                  baseline, no_compare, speculative, prompt_set, draft_tokens, json_path, html_path, md_path):
    """Time exported artifacts (OUT folders) on CPU, CUDA and mobile-class runtimes, each in a fresh process."""
    from edgelm import api

    result = api.bench(*outs, baseline=baseline, json=json_path, html=html_path, md=md_path, runtimes=list(runtimes) or None,
                       threads=list(threads) or None, shapes=list(shapes) or None, data=data, max_samples=max_samples,
                       pad=pad, prompt_len=prompt_len, new_tokens=new_tokens, seconds=seconds, rounds=rounds,
                       compare=not no_compare, speculative=speculative, prompt_set=prompt_set, draft_tokens=draft_tokens)
    click.echo(result.markdown())


# --- eval_command (issue 8) ---------------------------------------------------------------------------------
@main.command("eval")
@click.argument("model", metavar="MODEL_OR_OUT")
@click.option("--metric", "metrics", multiple=True, cls=GreedyOption,
              type=click.Choice(typing.get_args(EvalMetric)),
              help="metrics (default by task: accuracy | fidelity | perplexity icl generation; icl-suite: built-in ICL tasks; kld: KL divergence and top-1 agreement vs --reference, on a run folder its input model); several allowed")
@click.option("--runtime", "runtimes", multiple=True, cls=GreedyOption,
              help=f"auto (the artifact: ort > onnx > pte, else torch), torch, {', '.join(RUNTIMES.names())}; several allowed")
@click.option("--reference", help="MODEL to compare with (accuracy_drop_pt, fidelity, generation parity)")
@click.option("--k-shot", type=int, help="ICL probe: demonstrations per prompt (default 4)")
@click.option("--label-words", help="ICL probe: comma-separated words for labels 0,1,... (default: the data's label names)")
@click.option("--icl-template", help="ICL probe: prompt with {text} and a final {label}, \\n for a new line (default 'Input: {text}\\nLabel: {label}')")
@click.option("--max-samples", type=int, help="evaluate at most this many examples (default 1000)")
@click.option("--json", "as_json", is_flag=True, help="print the metrics as JSON")
@model_options
@data_options
def eval_command(model, metrics, runtimes, reference, k_shot, label_words, icl_template, max_samples, as_json, task, allow_pickle,
                 trust_remote_code, data, eval_data, text_column, label_column, seed):
    """Evaluate MODEL_OR_OUT (a model, stage folder or run folder) on its artifact or torch model."""
    from edgelm import api

    given = {"metrics": list(metrics) or None, "runtime": list(runtimes) or None, "k_shot": k_shot,
             "label_words": label_words.split(",") if label_words else None, "icl_template": icl_template,
             "max_samples": max_samples}
    config = api.stage_config("eval", None, {k: v for k, v in given.items() if v is not None}, where="edgelm eval options")
    result = api.eval(model, config=config, data=data, eval_data=eval_data, text_column=text_column,
                      label_column=label_column, reference=reference, seed=seed, task=task, allow_pickle=allow_pickle,
                      trust_remote_code=trust_remote_code).model_dump()
    if as_json:
        emit_json(result)
        return
    from edgelm.core.metrics import with_unit

    for key, value in result.items():
        if key not in ("by_runtime", "greedy_samples"):
            click.echo(f"{key:>24}: {with_unit(key, value)}")


# --- compress_command (issue 8) -----------------------------------------------------------------------------
@main.command("compress")
@click.argument("model", metavar="[MODEL]", required=False)
@click.option("-o", "--out", type=click.Path(path_type=Path), help="run folder (default: runs/<model>-<target>)")
@click.option("--target", type=click.Choice(["mobile", "cpu", "cuda"]), default="mobile", show_default=True,
              help="where the model will run; picks the default recipe")
@click.option("--recipe", type=click.Path(path_type=Path), help="use this recipe instead of the default one")
@click.option("--max-accuracy-drop", type=float, help="gate: largest allowed accuracy drop in points (exit 3 when missed)")
@click.option("--min-speedup", type=float, help="gate: smallest speedup against the bench baseline on the target runtime")
@click.option("--max-size-mb", type=float, help="gate: largest allowed artifact size in MB")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
@click.option("--task", type=click.Choice(["sequence-classification", "feature-extraction", "causal-lm"]),
              help="override the task detected from the config")
@click.option("--search", "use_search", is_flag=True, help="search the recipe's built-in space (Optuna, measured "
              "trials) and ship the best candidate that passes the gates; see edgelm search")
@click.option("--budget", help="with --search: wall time to spend, e.g. 10m [default: the space's]")
@click.option("--on-parity-fail", type=click.Choice(["error", "warn"]),
              help="quantize stages: fail on a parity miss (the recipe's default) or only record it")
@data_options
def compress_command(model, out, target, recipe, max_accuracy_drop, min_speedup, max_size_mb, as_json, task, use_search,
                     budget, on_parity_fail, data, eval_data, text_column, label_column, seed):
    """Compress MODEL (default minilm-l6) for TARGET: default recipe, eval, bench, report and an app bundle."""
    from edgelm import api

    if use_search:
        return _compress_by_search(model, out, target, recipe, budget, task, data, eval_data, text_column,
                                   label_column, seed, as_json, max_accuracy_drop, min_speedup, max_size_mb)
    if budget is not None:
        raise EdgelmError("--budget: only with --search")
    try:
        result = api.compress(model, out=out, target=target, recipe=recipe, data=data, eval_data=eval_data,
                              text_column=text_column, label_column=label_column, seed=seed, task=task,
                              max_accuracy_drop=max_accuracy_drop, min_speedup=min_speedup,
                              max_size_mb=max_size_mb, on_parity_fail=on_parity_fail).model_dump(mode="json")
    except GateFailed as exc:  # say where the (gate-failing) bundle and report are, then exit 3
        if getattr(exc, "result", None):
            _print_compress(exc.result, err=True)
        raise
    if as_json:
        emit_json(result)
    else:
        _print_compress(result)


def _compress_by_search(model, out, target, recipe, budget, task, data, eval_data, text_column, label_column,
                        seed, as_json, max_accuracy_drop, min_speedup, max_size_mb):
    from edgelm import api

    result = api.search(model, out=out, target=target, recipe=recipe, budget=budget, data=data, eval_data=eval_data,
                        text_column=text_column, label_column=label_column, seed=seed, task=task,
                        max_accuracy_drop=max_accuracy_drop, min_speedup=min_speedup,
                        max_size_mb=max_size_mb).model_dump(mode="json")
    emit_json(result) if as_json else _print_search(result)


def _print_card(out, err: bool = False) -> None:
    """The run's headline card (deliver.card) as its final result lines."""
    from edgelm.deliver.card import card_lines
    from edgelm.deliver.report import load_run

    for line in card_lines(*load_run(out)):
        click.echo(line, err=err)


def _print_compress(result: dict, err: bool = False) -> None:
    _print_card(result["out"], err)
    click.echo(f"bundle: {result['bundle']}  (try: python -m edgelm.consumer {result['bundle']} \"some text\")", err=err)
    click.echo("report: " + "  ".join(result["report"].values()), err=err)


# --- search_command (issue 22) -------------------------------------------------------------------------------
def search_options(f):
    f = click.option("--budget", help="wall time this worker may spend, e.g. 30m, 90s, 1h [default: the space's]")(f)
    f = click.option("--trials", type=int, help="stop the study after this many trials (all workers together)")(f)
    f = click.option("--storage", help="Optuna storage URL shared by workers, e.g. sqlite:///study.db or "
                                       "postgresql://host/db [default: sqlite in OUT]")(f)
    f = click.option("--study", help="study name (workers with the same storage and name split the trials) "
                                     "[default: the recipe's name]")(f)
    f = click.option("--heartbeat", type=click.IntRange(1), default=60, show_default=True,
                     help="seconds between a trial's heartbeats; a worker silent for twice that is failed and its "
                          "trial retried")(f)
    return f


@main.command("search")
@click.argument("model", metavar="[MODEL]", required=False)
@click.option("-o", "--out", type=click.Path(path_type=Path), help="search folder (default: runs/<model>-<target>-search)")
@click.option("--target", type=click.Choice(["mobile", "cpu", "cuda"]), default="mobile", show_default=True,
              help="where the model will run; picks the base recipe and the runtime measured")
@click.option("--recipe", type=click.Path(path_type=Path), help="base recipe (its search: block is the space)")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
@click.option("--task", type=click.Choice(["sequence-classification", "feature-extraction", "causal-lm"]),
              help="override the task detected from the config")
@search_options
@data_options
def search_command(model, out, target, recipe, as_json, task, budget, trials, storage, study, heartbeat, data,
                   eval_data, text_column, label_column, seed):
    """Search compression recipes for MODEL with Optuna: each trial a real run measured on TARGET; the best
    candidate on the Pareto front that passes the gates is published as OUT/best with its bundle."""
    from edgelm import api

    result = api.search(model, out=out, target=target, recipe=recipe, budget=budget, trials=trials, storage=storage,
                        study=study, heartbeat=heartbeat, data=data, eval_data=eval_data, text_column=text_column,
                        label_column=label_column, seed=seed, task=task).model_dump(mode="json")
    if as_json:
        emit_json(result)
    else:
        _print_search(result)


def _print_search(result: dict) -> None:
    from edgelm.deliver.search_report import summary_lines

    for line in summary_lines(result):
        click.echo(line)
    if result.get("bundle"):
        click.echo(f"bundle: {result['bundle']}")
    click.echo("report: " + "  ".join(result["report"].values()))


if __name__ == "__main__":
    main()
