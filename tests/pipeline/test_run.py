import copy
import json

import pytest
import torch
from pydantic import Field

from edgelm.core.errors import StageFailed
from edgelm.pipeline.run import locked
from edgelm.pipeline.recipe import parse_recipe
from edgelm.pipeline.runner import run_recipe
from edgelm.core.stage import REGISTRY, Stage, StageConfig, StageResult, register_stage
from edgelm.core.errors import EdgelmError

CALLS = []


class ScaleConfig(StageConfig):
    factor: float = Field(2.0, description="multiply every weight by this")
    fail: bool = Field(False, description="raise after writing a partial file")


class ScaleStage(Stage):
    kind = "unit-scale"
    Config = ScaleConfig
    summary = "test-only stage"

    def run(self, bundle, config, ctx):
        CALLS.append(config.factor)
        (ctx.workdir / "partial.txt").write_text("half")
        if config.fail:
            raise RuntimeError("boom")
        model = copy.deepcopy(bundle.model)
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(config.factor)
        return StageResult(bundle.with_model(model), {"factor": config.factor, "size_mb": 1.5})


@pytest.fixture(autouse=True, scope="module")
def _unit_scale_registered():
    """Registered only while this module runs: the shared stage tester demands a case for every registered kind."""
    if "unit-scale" not in REGISTRY:
        register_stage(ScaleStage)
    yield
    REGISTRY.pop("unit-scale", None)


def recipe(model, *factors, fail_at=None, **extra):
    stages = [{"kind": "unit-scale", "factor": f, "fail": i == fail_at} for i, f in enumerate(factors)]
    return parse_recipe({"model": str(model), "stages": stages, **extra})


def test_registry_rejects_duplicates():
    with pytest.raises(ValueError, match="already registered"):
        register_stage(ScaleStage)


def test_run_writes_one_folder_per_stage_and_run_json(tiny_model, tmp_path):
    CALLS.clear()
    written = []
    run = run_recipe(recipe(tiny_model("bert"), 2.0, 3.0), tmp_path, on_written=written.append)
    assert [s["name"] for s in run["stages"]] == ["01-unit-scale", "02-unit-scale"]
    assert json.loads((tmp_path / "02-unit-scale" / "metrics.json").read_text())["metrics"]["factor"] == 3.0
    assert (tmp_path / "run.json").is_file() and (tmp_path / "recipe.resolved.yaml").is_file()
    assert written == [tmp_path] and not (tmp_path / "report.md").exists()  # the report is deliver's (on_written)
    assert run["environment"]["versions"]["torch"]
    history = json.loads((tmp_path / "02-unit-scale" / "edgelm.json").read_text())["history"]
    assert [h["config"]["factor"] for h in history] == [2.0, 3.0]


def test_rerun_resumes_and_changed_config_reruns_from_there(tiny_model, tmp_path):
    CALLS.clear()
    run_recipe(recipe(tiny_model("bert"), 2.0, 3.0), tmp_path)
    run = run_recipe(recipe(tiny_model("bert"), 2.0, 3.0), tmp_path)
    assert CALLS == [2.0, 3.0] and {s["status"] for s in run["stages"]} == {"resumed"}
    run = run_recipe(recipe(tiny_model("bert"), 2.0, 5.0), tmp_path)
    assert CALLS == [2.0, 3.0, 5.0] and [s["status"] for s in run["stages"]] == ["resumed", "ran"]


def test_failure_keeps_earlier_stages_and_leaves_no_half_written_folder(tiny_model, tmp_path):
    CALLS.clear()
    with pytest.raises(StageFailed, match="02-unit-scale"):
        run_recipe(recipe(tiny_model("bert"), 2.0, 3.0, fail_at=1), tmp_path)
    assert (tmp_path / "01-unit-scale" / "metrics.json").is_file()
    assert not (tmp_path / "02-unit-scale").exists() and not list(tmp_path.glob(".*.tmp"))
    run = run_recipe(recipe(tiny_model("bert"), 2.0, 3.0), tmp_path)
    assert CALLS == [2.0, 3.0, 3.0] and [s["status"] for s in run["stages"]] == ["resumed", "ran"]
    from edgelm.models.loading import load_bundle, load_model

    scaled = load_bundle(tmp_path / "02-unit-scale").model
    source = load_model(str(tiny_model("bert"))).model
    name, weight = next(iter(source.state_dict().items()))
    torch.testing.assert_close(scaled.state_dict()[name], weight * 6.0)


def test_gates_pass_and_fail(tiny_model, tmp_path):
    from edgelm.core.errors import GateFailed

    named = {"max_size_mb": {"value": 2, "stage": "01-unit-scale"}}
    run = run_recipe(recipe(tiny_model("bert"), 1.0, 1.0, gates=named), tmp_path / "a")
    assert run["gates"][0]["ok"] is True and run["gates"][0]["measured"] == 1.5
    assert run["gates"][0]["source"] == "01-unit-scale" and run["gates"][0]["metric"] == "size_mb"
    assert json.loads((tmp_path / "a" / "run.json").read_text())["units"]["size_mb"] == "MB"
    written = []
    with pytest.raises(GateFailed) as info:  # by default the size is the shipped artifact's: no export stage here
        run_recipe(recipe(tiny_model("bert"), 1.0, gates={"max_size_mb": 2, "max_accuracy_drop": 1}), tmp_path / "b",
                   on_written=lambda out: written.append(json.loads((out / "run.json").read_text())["gates"]))
    assert info.value.exit_code == 3 and written == [info.value.table]  # called on the new run.json, before the raise
    assert [(r["ok"], r["source"]) for r in info.value.table] == [(False, None), (False, None)]
    assert "not measured (no export or quantize stage in this run)" in str(info.value)
    assert "not measured (no eval stage in this run)" in str(info.value)


def test_lock_refuses_a_second_run(tmp_path):
    with locked(tmp_path):
        with pytest.raises(EdgelmError, match="another edgelm run"):
            with locked(tmp_path):
                pass
