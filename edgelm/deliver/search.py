"""`edgelm search` end to end: the base recipe (the one compress would run, or the user's), an Optuna study over
its `search:` block (or the built-in space of that recipe), then the chosen candidate published as OUT/best — a
normal run folder with its report and app bundle, whose recipe.resolved.yaml re-runs it with `edgelm run` — and
the search report (OUT/search.html, .md, .json) with every trial and the Pareto front.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from edgelm.core.errors import EdgelmError
from edgelm.core.ui import info
from edgelm.pipeline.compress import TARGET_RUNTIMES
from edgelm.pipeline.stage_cache import link_or_copy
from edgelm.pipeline.search_space import SearchConfig, builtin_space, builtin_space_path


def search_config(recipe, budget: str | None, trials: int | None) -> SearchConfig:
    """The recipe's own search block, else the built-in space of the recipe it is; CLI budget/trials win."""
    config = recipe.search or builtin_space(recipe.name)
    if config is None:
        raise EdgelmError(f"recipe {recipe.name or '(unnamed)'}: has no search: block and no built-in search space; "
                          "add a search: block (see edgelm/recipes/search/ for examples)")
    where = "its own search: block" if recipe.search else f"the built-in {builtin_space_path(recipe.name).name}"
    info(f"search space of {recipe.name or 'the recipe'}: {where}")
    changes = {k: v for k, v in (("budget", budget), ("trials", trials)) if v is not None}
    return SearchConfig.model_validate({**config.model_dump(), **changes})


def target_runtime(recipe, target: str) -> str:
    """The runtime the objectives read: the recipe bench's first runtime, else the target's."""
    runtimes = (recipe.bench or {}).get("runtimes") or TARGET_RUNTIMES[target]
    return runtimes[0]


def search(model: str | None, out: Path, *, target: str = "mobile", budget: str | None = None,
           trials: int | None = None, storage: str | None = None, study: str | None = None, heartbeat: int = 60,
           **recipe_kwargs) -> dict:
    """Run the study into OUT (or join it, with another worker's storage and study name); publish the choice."""
    import yaml

    from edgelm.pipeline.compress import build_recipe
    from edgelm.pipeline.recipe import dump_recipe
    from edgelm.pipeline.search import SearchPlan, optimize

    recipe = build_recipe(model, target=target, **recipe_kwargs)
    config = search_config(recipe, budget, trials)
    base = yaml.safe_load(dump_recipe(recipe))  # every default written out, so the recipe as written is a trial
    base.pop("search", None)
    plan = SearchPlan(base=base, config=config, out=Path(out), runtime=target_runtime(recipe, target),
                      storage=storage, study=study, heartbeat=heartbeat)
    info(f"search: {len(config.space)} parameters, objectives {', '.join(config.objectives)} on {plan.runtime}, "
         f"budget {config.budget}" + (f", at most {config.trials} trials" if config.trials else ""))
    info("search: a trial's quantize parity miss is recorded, not fatal: the trial is still measured and counts as "
         "infeasible where the recipe as written would stop on it")
    return summarize(optimize(plan), plan)


def summarize(study, plan) -> dict:
    """Rows for every trial, the published choice and the report files."""
    from edgelm.deliver.search_report import write_search_report
    from edgelm.pipeline.search import trial_rows

    rows, chosen = trial_rows(study, plan.config.directions(), plan.config.preferred())
    best = publish_best(plan.out, next((r for r in rows if r["chosen"]), None))
    result = {"out": str(plan.out), "study": plan.study_name(), "storage": plan.storage_url(),
              "objectives": plan.config.objectives, "directions": plan.config.directions(), "runtime": plan.runtime,
              "prefer": plan.config.preferred(),
              "trials": rows, "chosen": chosen, "distinct_candidates": distinct(rows), **best}
    result["report"] = {k: str(p) for k, p in write_search_report(result, plan.out).items()}
    return result


def distinct(rows: list[dict]) -> int:
    """Completed trials with different parameters (a repeated draw is not a new candidate)."""
    import json

    return len({json.dumps(r["params"], sort_keys=True) for r in rows if r["state"] == "COMPLETE"})


def publish_best(out: Path, row: dict | None) -> dict:
    """Copy the chosen trial's run folder to OUT/best (hard links, one rename) with its report and app bundle."""
    from edgelm.deliver.app_bundle import write_bundle
    from edgelm.deliver.report import render_run

    if row is None:
        info("search: no trial passed the gates; nothing published (see the trial table for why)")
        return {"best": None, "bundle": None}
    final, tmp = out / "best", out / ".best.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    link_copy(out / row["folder"], tmp)
    render_run(tmp)
    bundle = write_bundle(tmp)
    stale = out / ".best.old"
    if final.exists():
        shutil.rmtree(stale, ignore_errors=True)
        os.rename(final, stale)
    os.rename(tmp, final)
    shutil.rmtree(stale, ignore_errors=True)
    return {"best": str(final), "bundle": str(final / Path(bundle).relative_to(tmp))}


def link_copy(source: Path, target: Path) -> None:
    """A run folder's copy: stage folders hard-linked (never written again), its top-level files copied (the
    report and bundle written next are the copy's own)."""
    target.mkdir(parents=True)
    for entry in source.iterdir():
        if entry.name in (".lock", "bundle") or entry.name.startswith("report."):
            continue
        if entry.is_dir():
            shutil.copytree(entry, target / entry.name, copy_function=link_or_copy)
        else:
            shutil.copy2(entry, target / entry.name)
