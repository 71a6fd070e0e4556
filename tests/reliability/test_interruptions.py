"""Interruptions: SIGKILL at named points of a multi-stage recipe and of a single-stage command, then re-run.

Promises held here: a published `NN-kind/` folder is always complete (temp folder + atomic rename); a re-run
resumes after the last published stage and ends with the same bytes as a run that was never interrupted; a
second run into a locked output folder refuses with one line; a killed run's lock does not outlive it.
"""

from __future__ import annotations

import json
import random
import time

import pytest
import yaml

from tests.reliability.helpers import (Forked, assert_complete_stage_folder, assert_user_error, cli, file_digest,
                                       real_cli, stage_folders)

STAGES = ["01-rel-noise", "02-rel-noise", "03-rel-noise"]
# (kill point, stage folders published when the process dies there)
KILL_POINTS = [
    ("01-rel-noise.file0", []),               # mid-stage: the temp folder holds one of its files
    ("01-rel-noise.weights", []),             # weights saved, tokenizer and edgelm.json not yet
    ("01-rel-noise.unpublished", []),         # temp folder complete, rename not done
    ("02-rel-noise.file1", STAGES[:1]),
    ("02-rel-noise.unpublished", STAGES[:1]),
    ("03-rel-noise.weights", STAGES[:2]),
    ("run.json", STAGES),                     # every stage published, run.json / report not written
]
RANDOM_KILLS = 3


@pytest.fixture(scope="module")
def recipe_file(tmp_path_factory, tiny_model, rel_stages):
    path = tmp_path_factory.mktemp("recipe") / "three.yaml"
    path.write_text(yaml.safe_dump({"model": str(tiny_model("bert")), "seed": 7,
                                    "stages": [{"kind": rel_stages, "files": 2, "scale": 0.01 * (i + 1)} for i in range(3)]}))
    return path


@pytest.fixture(scope="module")
def reference(recipe_file, tmp_path_factory):
    """The same recipe, never interrupted: its final weights are what every resumed run must reproduce."""
    out = tmp_path_factory.mktemp("reference") / "run"
    started = time.time()
    code, output = cli("run", recipe_file, "-o", out)
    assert code == 0, output
    return {"digest": file_digest(out / STAGES[-1] / "model.safetensors"), "seconds": time.time() - started,
            "metrics": [json.loads((out / s / "metrics.json").read_text())["metrics"] for s in STAGES]}


def check_after_kill(out) -> list[str]:
    """Nothing half-written is visible: every NN-kind folder is complete. Returns the published names."""
    published = stage_folders(out) if out.exists() else []
    for folder in published:
        assert_complete_stage_folder(folder)
    return [p.name for p in published]


def rerun_and_compare(recipe_file, out, published, reference):
    code, output = cli("run", recipe_file, "-o", out)
    assert code == 0, output
    run = json.loads((out / "run.json").read_text())
    statuses = {s["name"]: s["status"] for s in run["stages"]}
    assert statuses == {name: ("resumed" if name in published else "ran") for name in STAGES}
    assert file_digest(out / STAGES[-1] / "model.safetensors") == reference["digest"], "resumed run differs"
    assert [s["metrics"] for s in run["stages"]] == reference["metrics"]
    leftovers = [p.name for p in out.iterdir() if p.name.endswith(".tmp") or ".stale-" in p.name]
    assert not leftovers, f"temp folders left after the re-run: {leftovers}"


@pytest.mark.parametrize("point,expected", KILL_POINTS, ids=[p for p, _ in KILL_POINTS])
def test_sigkill_at_point_then_resume(point, expected, recipe_file, reference, tmp_path):
    out = tmp_path / "run"
    child = Forked(tmp_path, "run", recipe_file, "-o", out, stop_at=point)
    child.wait_for(point)
    child.kill()
    published = check_after_kill(out)
    assert published == expected
    rerun_and_compare(recipe_file, out, published, reference)


@pytest.mark.parametrize("n", range(RANDOM_KILLS))
def test_sigkill_at_random_time_then_resume(n, recipe_file, reference, tmp_path):
    delay = random.Random(n).uniform(0.1, 1.0) * reference["seconds"]
    out = tmp_path / "run"
    child = Forked(tmp_path, "run", recipe_file, "-o", out, signals=False)
    time.sleep(delay)
    child.kill()
    published = check_after_kill(out)
    rerun_and_compare(recipe_file, out, published, reference)


def test_second_run_into_a_locked_folder_refuses_and_a_killed_lock_is_released(recipe_file, reference, tmp_path):
    out = tmp_path / "run"
    child = Forked(tmp_path, "run", recipe_file, "-o", out, stop_at="02-rel-noise.file0")
    child.wait_for("02-rel-noise.file0")
    before = sorted(p.name for p in out.iterdir())
    code, output = cli("run", recipe_file, "-o", out)
    line = assert_user_error(code, output, "another edgelm run")
    assert str(child.proc.pid) in line
    proc = real_cli("run", recipe_file, "-o", out, module="tests.reliability.plugin")  # the real exit code
    assert proc.returncode == 2 and "another edgelm run" in proc.stderr and "Traceback" not in proc.stderr
    assert sorted(p.name for p in out.iterdir()) == before, "the refused runs touched the folder"
    child.kill()
    rerun_and_compare(recipe_file, out, ["01-rel-noise"], reference)


# --- single-stage commands: OUT is replaced atomically or not at all -----------------------------------------
@pytest.mark.parametrize("point", ["out.file0", "out.weights", "out.unpublished"])
def test_sigkill_during_forced_single_stage_keeps_the_old_output(point, tiny_model, rel_stages, tmp_path):
    model, out = tiny_model("bert"), tmp_path / "out"
    first = Forked(tmp_path / "first", rel_stages, model, "-o", out, "--scale", "0.01", signals=False)
    assert first.join() == 0, first.output()
    old = assert_complete_stage_folder(out)
    child = Forked(tmp_path / "second", rel_stages, model, "-o", out, "--scale", "0.02", "--force", stop_at=point)
    child.wait_for(point)
    child.kill()
    assert assert_complete_stage_folder(out)["hash"] == old["hash"], "OUT changed although the run was killed"
    again = Forked(tmp_path / "third", rel_stages, model, "-o", out, "--scale", "0.02", "--force", signals=False)
    assert again.join() == 0, again.output()
    new = assert_complete_stage_folder(out)
    assert new["hash"] != old["hash"] and new["config"]["scale"] == 0.02
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.")], "temp/lock folders left behind"


def test_two_single_stage_commands_into_one_out(tiny_model, rel_stages, tmp_path):
    model, out = tiny_model("bert"), tmp_path / "out"
    child = Forked(tmp_path / "first", rel_stages, model, "-o", out, stop_at="out.file0")
    child.wait_for("out.file0")
    code, output = cli("lowrank", model, "-o", out, "--ratio", "0.5")
    assert_user_error(code, output, "another edgelm run")
    assert not out.exists(), "the refused command published something"
    child.kill()
    again = Forked(tmp_path / "again", rel_stages, model, "-o", out, signals=False)
    assert again.join() == 0, again.output()
    assert_complete_stage_folder(out)


def test_disk_full_while_saving_is_one_line_and_leaves_nothing(recipe_file, monkeypatch, tmp_path):
    import errno

    import edgelm.models.bundle

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(edgelm.models.bundle, "save_model", full)
    out = tmp_path / "run"
    code, output = cli("run", recipe_file, "-o", out)
    assert_user_error(code, output, "No space left on device")
    assert stage_folders(out) == [] and not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_unwritable_output_folder_is_one_line(recipe_file, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code, output = cli("run", recipe_file, "-o", blocker / "run")
    assert_user_error(code, output, "cannot create the output folder")


def test_ctrl_c_mid_stage_exits_130_and_removes_the_temp_folder(recipe_file, reference, tmp_path):
    import os
    import signal

    out = tmp_path / "run"
    child = Forked(tmp_path, "run", recipe_file, "-o", out, stop_at="02-rel-noise.file0")
    child.wait_for("02-rel-noise.file0")
    os.kill(child.proc.pid, signal.SIGINT)
    assert child.join() == 130, child.output()
    assert "interrupted" in child.output() and "Traceback" not in child.output()
    assert check_after_kill(out) == ["01-rel-noise"]
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")], "Ctrl-C left the temp folder"
    rerun_and_compare(recipe_file, out, ["01-rel-noise"], reference)
