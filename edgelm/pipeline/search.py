"""`edgelm search`: an Optuna study over a recipe's parameters, each trial a real run measured on the target.

A trial's recipe is the base recipe plus the sampled `--set` values (edgelm.pipeline.search_space). It runs into
OUT/trials/NNNN/ through the normal pipeline, after restoring the stages an earlier trial already finished with the
same resume hash (edgelm.pipeline.stage_cache), so a trial that changes only quantization does not re-train. Its
objectives are read from its run.json; the recipe's gates become Optuna constraints (a miss makes a trial
infeasible, not an error). Workers given the same storage URL and study name split the trials; a killed worker's
trial is failed by the heartbeat and retried once. The front is the non-dominated set of feasible trials.
"""

from __future__ import annotations

import fcntl
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from edgelm.core.errors import EdgelmError, GateFailed, StageFailed
from edgelm.core.records import RunRecord
from edgelm.core.ui import info
from edgelm.measure.pareto import pareto_front
from edgelm.pipeline.gates import shipped_stage
from edgelm.pipeline.recipe import apply_overrides, parse_recipe
from edgelm.pipeline.run import locked, stage_names
from edgelm.pipeline.runner import run_recipe
from edgelm.pipeline.search_space import SearchConfig, drop_disabled, overrides, suggest
from edgelm.pipeline import stage_cache


@dataclass
class SearchPlan:
    base: dict  # the raw recipe every trial starts from (no search block)
    config: SearchConfig
    out: Path
    runtime: str  # the target runtime whose speedup / latency the objectives read
    storage: str | None = None  # SQLAlchemy URL; default sqlite:///OUT/study.db
    study: str | None = None  # default: the recipe's name
    heartbeat: int = 60  # seconds between a running trial's heartbeats (a silent trial is failed after 2x)
    on_trial_written: Callable[[Path], object] | None = None  # the deliver layer's per-trial report
    extra: dict = field(default_factory=dict)

    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{(self.out / 'study.db').resolve()}"

    def study_name(self) -> str:
        return self.study or self.base.get("name") or "edgelm-search"


# --- one trial ------------------------------------------------------------------------------------------------
def trial_recipe(plan: SearchPlan, params: dict):
    """The validated recipe of one trial: base + the search's fixed `set` + the sampled values. Its quantize
    stages only record a parity miss, so the trial is still measured; `strict_parity_stages` names those whose
    miss would have stopped the recipe as written, and such a miss makes the trial infeasible."""
    raw = _trial_raw(plan, params)
    for stage in raw.get("stages") or []:
        if stage.get("kind") == "quantize":
            stage["on_parity_fail"] = "warn"
    return parse_recipe(raw, "search trial")


def strict_parity_stages(plan: SearchPlan, params: dict) -> list[str]:
    """Folder names (NN-quantize) of the trial's quantize stages whose parity miss fails the recipe as written."""
    stages = _trial_raw(plan, params).get("stages") or []
    names = stage_names([(s.get("kind"), s) for s in stages])
    return [name for name, s in zip(names, stages)
            if s.get("kind") == "quantize" and s.get("on_parity_fail", "error") != "warn"]


def _trial_raw(plan: SearchPlan, params: dict) -> dict:
    import copy

    raw = apply_overrides(copy.deepcopy(plan.base), [*plan.config.set, *overrides(params)])
    raw["gates"] = {**plan.config.gates, **(raw.get("gates") or {})}
    return drop_disabled(raw)


def run_trial(plan: SearchPlan, number: int, params: dict) -> RunRecord:
    """Run (or resume) one trial's recipe into OUT/trials/NNNN, sharing finished stages through the cache."""
    recipe = trial_recipe(plan, params)
    recipe.name = f"{plan.study_name()}-trial-{number:04d}"
    folder, cache = plan.out / "trials" / f"{number:04d}", plan.out / "cache"
    stages = stage_cache.recipe_stages(recipe)
    with locked(folder):  # its .lock also marks the folder as a run folder for run_recipe
        reused = stage_cache.restore(cache, folder, stages)
    info(f"trial {number}: {', '.join(overrides(params)) or 'the base recipe'}"
         + (f" (reusing {reused} finished stage{'s' * (reused != 1)})" if reused else ""))
    try:
        run_recipe(recipe, folder, on_written=plan.on_trial_written)
    except GateFailed:
        pass  # the gate rows in run.json make the trial infeasible
    finally:
        stage_cache.store(cache, folder, stages)
    return RunRecord.load(folder)


def objective_value(run: RunRecord, name: str, runtime: str) -> float:
    """A figure of the trial's run: size of the shipped artifact, else the latest stage reporting `name` (a
    per-runtime mapping gives the target runtime's value)."""
    if name == "size_mb":
        shipped = shipped_stage(run.stages)
        value = shipped.metrics.get("size_mb") if shipped else None
    else:
        value = next((s.metrics[name] for s in reversed(run.stages) if s.metrics.get(name) is not None), None)
    if isinstance(value, dict):
        value = value.get(runtime, next(iter(value.values()), None))
    if not isinstance(value, (int, float)):
        raise EdgelmError(f"search objective {name}: this recipe's run does not measure it for {runtime} "
                          "(add the eval/bench section that reports it, or pick another objective)")
    return float(value)


def violations(run: RunRecord, strict: list[str]) -> list[float]:
    """One figure per gate and per strict quantize stage's parity verdict: <= 0 when it passed, else how far it
    missed (1.0 when it measured nothing or missed parity)."""
    out = []
    for row in run.gates:
        if row.ok:
            out.append(0.0)
        elif row.measured is None:
            out.append(1.0)
        else:
            target = float(row.target.split()[1].rstrip("%×"))
            out.append(abs(row.measured - target) or 1e-9)
    return out + [0.0 if not missed else 1.0 for _, missed in parity_misses(run, strict)]


def parity_misses(run: RunRecord, strict: list[str]) -> list[tuple[str, list[str]]]:
    """(stage name, what its parity check missed) for the strict quantize stages; an empty list when it passed."""
    from edgelm.techniques.quantize.workflow import parity_misses as missed_by

    return [(stage.name, missed_by(stage.metrics)) for stage in run.stages
            if stage.name in strict and isinstance(stage.metrics.get("parity"), dict)]


def miss_reasons(run: RunRecord, strict: list[str]) -> list[str]:
    """One short line per missed gate or parity check (the trial table's gates column)."""
    from edgelm.pipeline.gates import measured_text

    gates = [f"{r.gate}: {measured_text(r)} (needs {r.target})" for r in run.gates if not r.ok]
    return gates + [f"{name} parity: {', '.join(missed)}" for name, missed in parity_misses(run, strict) if missed]


# --- the study ------------------------------------------------------------------------------------------------
def open_study(plan: SearchPlan):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # a failed trial is said in one line below
    plan.out.mkdir(parents=True, exist_ok=True)
    storage = open_storage(plan.storage_url(), plan.heartbeat)
    try:
        return optuna.create_study(study_name=plan.study_name(), storage=storage, directions=plan.config.directions(),
                                   sampler=make_sampler(plan.config, plan.base.get("seed", 0)), load_if_exists=True)
    except ValueError as exc:  # an existing study of that name optimises other objectives
        raise EdgelmError(f"study {plan.study_name()!r} in {plan.storage_url()}: {exc}; use another --study") from None


def open_storage(url: str, heartbeat: int, attempts: int = 5):
    """The storage. Workers starting together on a new database race to create its tables: on one machine a file
    lock orders them; elsewhere the loser of the race retries."""
    for attempt in range(attempts):
        try:
            with creation_lock(url):
                return rdb_storage(url, heartbeat)
        except Exception as exc:  # SQLAlchemy's errors for a bad URL / unreachable server / a lost creation race
            if any(m in str(exc) for m in RACE_MESSAGES) and attempt < attempts - 1:
                time.sleep(0.5 * (attempt + 1))
                continue
            raise EdgelmError(f"--storage {url!r}: cannot open ({str(exc).splitlines()[0]})") from None


RACE_MESSAGES = ("already exists", "UNIQUE constraint", "duplicate key", "database is locked")


@contextmanager
def creation_lock(url: str):
    if not url.startswith("sqlite:///"):
        yield
        return
    with open(url.removeprefix("sqlite:///") + ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def rdb_storage(url: str, heartbeat: int):
    """Optuna's RDB storage with heartbeats: a trial whose worker went silent is failed and retried once."""
    import warnings

    import optuna.storages as storages

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # heartbeats are marked experimental
        if hasattr(storages, "RetryHeartbeatStaleTrialCallback"):  # optuna >= 4.9
            retry = {"heartbeat_stale_trial_callback": storages.RetryHeartbeatStaleTrialCallback(max_retry=1)}
        else:
            retry = {"failed_trial_callback": storages.RetryFailedTrialCallback(max_retry=1)}
        return storages.RDBStorage(url, heartbeat_interval=heartbeat, grace_period=2 * heartbeat, **retry)


def make_sampler(config: SearchConfig, seed: int):
    import optuna

    constraints = lambda trial: trial.user_attrs.get("violations", [1.0])  # noqa: E731 (optuna wants a callable)
    if config.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if config.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, constraints_func=constraints)
    return optuna.samplers.NSGAIISampler(seed=seed, population_size=config.population, constraints_func=constraints)


def make_objective(plan: SearchPlan):
    def objective(trial):
        params = suggest(trial, plan.config.space)
        trial.set_user_attr("sampled", params)
        started = time.time()
        try:
            run = run_trial(plan, trial.number, params)
            values = [objective_value(run, name, plan.runtime) for name in plan.config.objectives]
        except (EdgelmError, StageFailed) as exc:
            info(f"trial {trial.number} failed: {exc}")
            trial.set_user_attr("error", str(exc))
            trial.set_user_attr("violations", [1.0])
            raise
        strict = strict_parity_stages(plan, params)
        trial.set_user_attr("violations", violations(run, strict))
        trial.set_user_attr("misses", miss_reasons(run, strict))
        trial.set_user_attr("seconds", round(time.time() - started, 1))
        trial.set_user_attr("folder", f"trials/{trial.number:04d}")
        return values
    return objective


def optimize(plan: SearchPlan):
    """Run trials until this worker's budget or the study's trial cap is spent; returns the study."""
    study = open_study(plan)
    enqueue_base(study, plan)
    cap = plan.config.trials
    if cap and counted_trials(study) >= cap:
        return study

    def stop_at_cap(study, trial):
        if cap and counted_trials(study) >= cap:
            study.stop()

    callbacks = [lambda study, trial: enqueue_sweep(study, trial, plan.config), stop_at_cap]
    study.optimize(make_objective(plan), timeout=plan.config.budget_seconds(), callbacks=callbacks,
                   catch=(EdgelmError, StageFailed), gc_after_trial=True)
    return study


def enqueue_base(study, plan: SearchPlan) -> None:
    """A new study's first trial is the recipe as written, when its values are choices of the space, so the front
    is compared with it in the same study."""
    import json

    params = base_params(plan.base, plan.config.space)
    if study.trials or params is None:
        return
    encoded = {k: json.dumps(v) if isinstance(plan.config.space[k], list) else v for k, v in params.items()}
    study.enqueue_trial(encoded, user_attrs={"base_recipe": True})


def base_params(raw: dict, space: dict) -> dict | None:
    """The base recipe's value of each parameter, or None when one of them is not a choice of the space (a
    mapping choice matches when the recipe has its keys at those values)."""
    params = {}
    for key, choices in space.items():
        value = read_path(raw, key)
        if isinstance(choices, list):
            match = [c for c in choices if c == value or (isinstance(c, dict) and isinstance(value, dict)
                                                          and all(value.get(k) == v for k, v in c.items()))]
            if not match:
                return None
            params[key] = match[0]
        elif isinstance(value, (int, float)) and choices.low <= value <= choices.high:
            params[key] = value
        else:
            return None
    return params


def read_path(raw, key: str):
    node = raw
    for part in key.split("."):
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict):
            node = node.get(part)
        else:
            return None
    return node


def enqueue_sweep(study, trial, config: SearchConfig) -> None:
    """After a freshly sampled trial, queue its siblings: the same draw with every other choice of the swept
    parameters (they reuse its earlier stages, so each costs only the last ones)."""
    import json
    from itertools import product

    if not config.sweep or "sibling_of" in trial.user_attrs or any(k not in trial.params for k in config.sweep):
        return
    choices = [[json.dumps(c) for c in config.space[key]] for key in config.sweep]
    for combo in product(*choices):
        params = {**trial.params, **dict(zip(config.sweep, combo))}
        if params != trial.params:
            study.enqueue_trial(params, user_attrs={"sibling_of": trial.number}, skip_if_exists=True)


def counted_trials(study) -> int:
    """Trials that count towards the cap: completed ones and those that failed with a reason (a worker killed
    mid-trial fails it without one; its retry counts instead)."""
    import optuna

    return sum(t.state == optuna.trial.TrialState.COMPLETE or (t.state == optuna.trial.TrialState.FAIL
               and "error" in t.user_attrs) for t in study.get_trials(deepcopy=False))


# --- the front and the choice ---------------------------------------------------------------------------------
def choose(points: dict[int, list[float]], front: list[int], directions: list[str], prefer: int) -> int | None:
    """The front member best on objective `prefer`, ties broken by the others in order."""
    if not front:
        return None
    order = [prefer] + [i for i in range(len(directions)) if i != prefer]
    signs = [1 if d == "maximize" else -1 for d in directions]
    return max(front, key=lambda k: tuple(signs[i] * points[k][i] for i in order))


def trial_rows(study, directions: list[str], prefer: int) -> tuple[list[dict], int | None]:
    """Every trial as a row (params, values, state, feasibility, front, chosen) and the chosen trial's number."""
    rows = [_row(t) for t in study.get_trials(deepcopy=False)]
    points = {r["number"]: r["values"] for r in rows if r["state"] == "COMPLETE" and r["feasible"]}
    front = pareto_front(points, directions)
    chosen = choose(points, front, directions, prefer)
    for row in rows:
        row["on_front"], row["chosen"] = row["number"] in front, row["number"] == chosen
    return rows, chosen


def _row(trial) -> dict:
    violations_ = trial.user_attrs.get("violations", [1.0])
    return {"number": trial.number, "state": trial.state.name, "params": trial.user_attrs.get("sampled", dict(trial.params)),
            "values": list(trial.values) if trial.values else None, "feasible": all(v <= 0 for v in violations_),
            "violations": violations_, "seconds": trial.user_attrs.get("seconds"),
            "folder": trial.user_attrs.get("folder"), "error": trial.user_attrs.get("error"),
            "misses": trial.user_attrs.get("misses", []),
            "base_recipe": bool(trial.user_attrs.get("base_recipe"))}
