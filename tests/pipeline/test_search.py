import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from edgelm.core.errors import EdgelmError
from edgelm.measure.pareto import dominates
from edgelm.core.records import RunRecord, StageRecord
from edgelm.pipeline.search import (SearchPlan, miss_reasons, optimize, strict_parity_stages, trial_recipe, trial_rows,
                                    violations)
from edgelm.pipeline.search_space import SearchConfig, drop_disabled, overrides, parse_budget

from tests.pipeline import search_stages
from tests.pipeline.search_stages import CALLS_FILE, calls

pytest.importorskip("optuna")

SPACE = {"stages.1.quality": [70.0, 80.0, 90.0], "stages.1.speed": [1.0, 2.0, 3.0], "stages.1.drop": [0.0, 2.0]}


@pytest.fixture(autouse=True, scope="module")
def _stages_registered():
    search_stages.register()
    yield
    search_stages.unregister()


@pytest.fixture
def model(tiny_model):
    return tiny_model("bert")


@pytest.fixture
def calls_file(tmp_path, monkeypatch):
    path = tmp_path / "calls.txt"
    monkeypatch.setenv(CALLS_FILE, str(path))
    return path


def base_recipe(model) -> dict:
    gate = {"max_accuracy_drop": {"value": 1.0, "stage": "02-unit-figures"}}
    return {"name": "unit-search", "model": str(model), "stages": [{"kind": "unit-prefix"}, {"kind": "unit-figures"}],
            "gates": gate}


def plan_for(model, out, **config) -> SearchPlan:
    settings = {"space": SPACE, "objectives": ["accuracy", "speedup"], "sampler": "random", "trials": 6, **config}
    return SearchPlan(base=base_recipe(model), config=SearchConfig.model_validate(settings), out=out, runtime="ort-cpu")


# --- the space ------------------------------------------------------------------------------------------------
def test_budget_units():
    assert [parse_budget(t) for t in ("30m", "90s", "1.5h", "2")] == [1800, 90, 5400, 120]
    with pytest.raises(EdgelmError, match="positive duration"):
        parse_budget("soon")


def test_mapping_values_set_each_key_and_disabled_stages_go():
    assert overrides({"stages.6": {"method": "int4", "block_size": 64}, "stages.3.heads": 0.5}) == [
        'stages.6.method="int4"', "stages.6.block_size=64", "stages.3.heads=0.5"]
    raw = {"stages": [{"kind": "a"}, {"kind": "b", "enabled": False}, {"kind": "c", "enabled": True}]}
    assert drop_disabled(raw)["stages"] == [{"kind": "a"}, {"kind": "c"}]


def test_objectives_must_be_directed_metrics():
    with pytest.raises(ValueError, match="better direction"):
        SearchConfig(objectives=["icl_data"])
    with pytest.raises(ValueError, match="not one of the objectives"):
        SearchConfig(objectives=["accuracy"], prefer="speedup")


def test_trial_recipe_applies_sampled_values(model, tmp_path):
    plan = plan_for(model, tmp_path)
    recipe = trial_recipe(plan, {"stages.1.quality": 90.0, "stages.1.speed": 3.0, "stages.1.drop": 0.0})
    assert recipe.steps()[1][1].quality == 90.0 and recipe.steps()[1][1].speed == 3.0


def test_a_strict_quantize_parity_miss_is_measured_and_makes_the_trial_infeasible(model, tmp_path):
    plan = plan_for(model, tmp_path)
    plan.base["stages"] = [{"kind": "export"}, {"kind": "quantize", "method": "int4"},
                           {"kind": "quantize", "method": "int8-dynamic", "on_parity_fail": "warn"}]
    plan.base["gates"] = {}
    recipe = trial_recipe(plan, {})
    assert [cfg.on_parity_fail for kind, cfg in recipe.steps() if kind == "quantize"] == ["warn", "warn"]
    strict = strict_parity_stages(plan, {})
    assert strict == ["02-quantize"]  # the recipe as written stops on this one's miss, not on 03's
    missed = {"ok": False, "checks": {"perplexity_ratio": {"value": 1.4, "tolerance": 1.08, "ok": False}}}
    stages = [StageRecord(name="01-export", kind="export", hash="a", status="ran", seconds=1.0),
              StageRecord(name="02-quantize", kind="quantize", hash="b", status="ran", seconds=1.0,
                          metrics={"parity": missed, "parity_torch": {"ok": True}}),
              StageRecord(name="03-quantize", kind="quantize", hash="c", status="ran", seconds=1.0,
                          metrics={"parity": missed})]
    run = RunRecord(stages=stages)
    assert violations(run, strict) == [1.0]
    assert miss_reasons(run, strict) == ["02-quantize parity: perplexity_ratio=1.4 (needs <= 1.08)"]
    stages[1].metrics["parity"] = {"ok": True, "checks": {}}
    assert violations(run, strict) == [0.0] and miss_reasons(run, strict) == []


# --- a study --------------------------------------------------------------------------------------------------
def test_study_reuses_the_shared_prefix_and_finds_the_true_front(model, tmp_path, calls_file):
    plan = plan_for(model, tmp_path / "s", trials=8)
    study = optimize(plan)
    rows, chosen = trial_rows(study, plan.config.directions(), plan.config.preferred())
    assert len([r for r in rows if r["state"] == "COMPLETE"]) == 8
    assert calls(calls_file, "unit-prefix") == 1  # every trial after the first restored it from the cache
    assert calls(calls_file, "unit-figures") == len({json.dumps(r["params"], sort_keys=True) for r in rows})
    feasible = {r["number"]: r["values"] for r in rows if r["feasible"]}
    assert all(r["params"]["stages.1.drop"] == 0.0 for r in rows if r["feasible"])  # the gate: drop <= 1 pt
    brute = [k for k, v in feasible.items() if not any(dominates(w, v, ["maximize"] * 2) for w in feasible.values())]
    assert sorted(brute) == sorted(r["number"] for r in rows if r["on_front"])
    best = max(feasible.values(), key=lambda v: (v[1], v[0]))  # preferred: speedup, then accuracy
    assert feasible[chosen] == best


def test_identical_draws_run_no_stage_twice(model, tmp_path, calls_file):
    plan = plan_for(model, tmp_path / "s", trials=6)
    plan.config.space = {"stages.1.quality": [80.0]}
    optimize(plan)
    assert calls(calls_file, "unit-figures") == 1 and calls(calls_file, "unit-prefix") == 1


def test_a_second_invocation_continues_the_same_study(model, tmp_path, calls_file):
    optimize(plan_for(model, tmp_path / "s", trials=3))
    study = optimize(plan_for(model, tmp_path / "s", trials=5))
    assert len(study.trials) == 5


def test_unmeasured_objective_fails_the_trial_with_the_reason(model, tmp_path, calls_file):
    plan = plan_for(model, tmp_path / "s", trials=1, objectives=["accuracy", "size_mb"])
    rows, chosen = trial_rows(optimize(plan), plan.config.directions(), plan.config.preferred())
    assert chosen is None and rows[0]["state"] == "FAIL" and "does not measure it" in rows[0]["error"]


# --- workers sharing one storage ------------------------------------------------------------------------------
WORKER = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    from tests.pipeline import search_stages
    search_stages.register()
    from edgelm.pipeline.search import SearchPlan, optimize
    from edgelm.pipeline.search_space import SearchConfig
    args = json.loads(sys.argv[1])
    if args.get("slow"):
        orig = search_stages.FiguresStage.run
        def slow(self, *a):
            time.sleep(args["slow"]); return orig(self, *a)
        search_stages.FiguresStage.run = slow
    plan = SearchPlan(base=args["base"], config=SearchConfig.model_validate(args["config"]), out=Path(args["out"]),
                      runtime="ort-cpu", heartbeat=args.get("heartbeat", 60))
    optimize(plan)
""")


def start_worker(tmp_path, model, out, trials, **extra):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    config = {"space": SPACE, "objectives": ["accuracy", "speedup"], "sampler": "random", "trials": trials}
    args = {"base": base_recipe(model), "config": config, "out": str(out), **extra}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[2]), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, str(script), json.dumps(args)], env=env, stderr=subprocess.PIPE, text=True)


def load_rows(out):
    plan = plan_for("unused", out)
    import optuna

    study = optuna.load_study(study_name="unit-search", storage=plan.storage_url())
    return study.get_trials(deepcopy=False)


def test_two_workers_split_the_trials(model, tmp_path, calls_file):
    out = tmp_path / "s"
    out.mkdir()
    workers = [start_worker(tmp_path, model, out, trials=6, slow=0.2) for _ in range(2)]
    errors = [w.communicate(timeout=300)[1] for w in workers]
    (tmp_path / "worker-errors.txt").write_text("\n=====\n".join(errors))
    assert [w.returncode for w in workers] == [0, 0], [e[-3000:] for e in errors]
    trials = load_rows(out)
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert 6 <= len(complete) <= 7  # a worker may start one trial before it sees the other's last one finish
    assert len({t.number for t in trials}) == len(trials)  # no trial number handed out twice
    assert calls(calls_file, "unit-figures") <= len(complete)  # a cached draw runs nothing; two workers drawing
    # the same values at once may both run it (the first to finish publishes the cache entry)


@pytest.mark.slow
def test_a_killed_worker_leaves_a_study_that_resumes(model, tmp_path, calls_file):
    out = tmp_path / "s"
    out.mkdir()
    victim = start_worker(tmp_path, model, out, trials=4, slow=30, heartbeat=1)
    deadline = time.time() + 120
    while calls(calls_file, "unit-prefix") == 0 and time.time() < deadline:
        time.sleep(0.5)
    time.sleep(2)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert any(t.state.name == "RUNNING" for t in load_rows(out))
    time.sleep(3)  # past the grace period: the next worker fails the silent trial and retries it
    resumed = start_worker(tmp_path, model, out, trials=4, heartbeat=1)
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    states = [t.state.name for t in load_rows(out)]
    assert states.count("COMPLETE") >= 4 and "RUNNING" not in states


def test_swept_parameters_are_tried_with_every_choice_for_each_draw(model, tmp_path, calls_file):
    plan = plan_for(model, tmp_path / "s", trials=6, sweep=["stages.1.speed"])
    rows, _ = trial_rows(optimize(plan), plan.config.directions(), plan.config.preferred())
    draws = {}
    for r in rows:
        rest = json.dumps({k: v for k, v in r["params"].items() if k != "stages.1.speed"}, sort_keys=True)
        draws.setdefault(rest, set()).add(r["params"]["stages.1.speed"])
    assert len(draws) == 2 and all(speeds == {1.0, 2.0, 3.0} for speeds in draws.values())


def test_the_recipe_as_written_is_the_first_trial(model, tmp_path, calls_file):
    plan = plan_for(model, tmp_path / "s", trials=2)
    plan.base["stages"][1].update(quality=80.0, speed=2.0, drop=0.0)
    rows, _ = trial_rows(optimize(plan), plan.config.directions(), plan.config.preferred())
    first = min(rows, key=lambda r: r["number"])
    assert first["base_recipe"] and first["params"] == {"stages.1.quality": 80.0, "stages.1.speed": 2.0,
                                                        "stages.1.drop": 0.0}
    assert [r["base_recipe"] for r in rows].count(True) == 1
