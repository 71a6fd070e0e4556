"""Faults a user meets: a half-done swap, an empty recipe, a degenerate tokenizer, a full disk, two runs at once,
a damaged cache entry. Each ends with one line and exit 2 (or success), and never a damaged previous output."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.reliability.helpers import assert_user_error, cli


def test_a_forced_single_stage_command_restores_a_half_swapped_output(tiny_model, rel_stages, tmp_path):
    model, out = tiny_model("bert"), tmp_path / "out"
    assert cli(rel_stages, model, "-o", out, "--scale", "0.01")[0] == 0
    os.rename(out, tmp_path / ".out.stale-4242")  # a kill between the fallback's two renames
    code, output = cli(rel_stages, model, "-o", out, "--scale", "0.02", "--force")
    assert code == 0, output
    assert (out / "metrics.json").is_file() and not list(tmp_path.glob(".out.*")), "the stale copy was left behind"


def test_a_recipe_with_nothing_to_run_is_one_line_naming_the_file(tmp_path):
    for n, text in enumerate(["task:\n", "gates:\n", "", "gates: {max_size_mb: 3}\n"]):
        recipe = tmp_path / f"r{n}.yaml"
        recipe.write_text(text)
        line = assert_user_error(*cli("run", recipe, "-o", tmp_path / f"out{n}"), "add a model: and a stages: list")
        assert str(recipe) in line and not (tmp_path / f"out{n}").exists()


# --- a tokenizer that loads but cannot work -----------------------------------------------------------------
def _without_unk(model: dict) -> None:
    model["vocab"].pop(model["unk_token"])


def _one_id(model: dict) -> None:
    model["vocab"] = {word: 0 for word in model["vocab"]}


def _empty(model: dict) -> None:
    model["vocab"] = {}


def _past_the_embedding(model: dict) -> None:
    model["vocab"]["zzz"] = 5000


@pytest.mark.parametrize("edit,expect", [
    (_without_unk, "must be in the vocabulary"), (_one_id, "vocabulary entries maps to id 0"),
    (_empty, "vocabulary has no words"), (_past_the_embedding, "ids up to 5000 but the model's embedding has"),
])
@pytest.mark.parametrize("arch", ["bert", "llama"])
def test_a_degenerate_tokenizer_is_one_line_naming_the_file(arch, edit, expect, tiny_model, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(tiny_model(arch), folder)
    tokenizer = json.loads((folder / "tokenizer.json").read_text())
    edit(tokenizer["model"])
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer))
    for command in (["info", folder], ["export", folder, "-o", tmp_path / "out"]):
        line = assert_user_error(*cli(*command), expect)
        assert f"{folder / 'tokenizer.json'}:" in line and "copy the tokenizer files" in line
    assert not (tmp_path / "out").exists()


# --- the disk filling mid-stage -------------------------------------------------------------------------------
def _previous_output(model, out: Path, rel_stages) -> dict:
    code, output = cli(rel_stages, model, "-o", out, "--scale", "0.01", "--files", "0")
    assert code == 0, output
    return {p.name: p.read_bytes() for p in out.iterdir()}


def _assert_kept(out: Path, before: dict, line: str) -> None:
    assert "No space left on device" in line and "the previous output is untouched" in line
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before, "the previous output changed"
    assert not [p.name for p in out.parent.iterdir() if p.name.startswith(".out.")], "temp or lock files left"


def test_a_full_disk_mid_stage_keeps_the_previous_output(tiny_model, rel_stages, tmp_path, monkeypatch):
    """The unit form every CI runs: the stage's own file writes raise ENOSPC."""
    out = tmp_path / "out"
    before = _previous_output(tiny_model("bert"), out, rel_stages)

    def full(self, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(self))

    monkeypatch.setattr(Path, "write_bytes", full)
    line = assert_user_error(*cli(rel_stages, tiny_model("bert"), "-o", out, "--scale", "0.02", "--force"))
    _assert_kept(out, before, line)


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs (needs root / CAP_SYS_ADMIN; skipped with the reason elsewhere)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip() or proc.returncode}); "
                    "test_a_full_disk_mid_stage_keeps_the_previous_output covers it by ENOSPC injection")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(folder: Path, leave: int) -> None:
    """Fill the file system holding `folder` until about `leave` bytes are free."""
    free = shutil.disk_usage(folder).free
    (folder / "filler").write_bytes(b"\0" * max(free - leave, 0))


@pytest.mark.parametrize("leave,files", [(6000, 20), (60_000, 0)])  # full during the stage's writes / the save
def test_a_real_full_disk_keeps_the_previous_output(leave, files, tiny_model, rel_stages, small_disk):
    out = small_disk / "out"
    before = _previous_output(tiny_model("bert"), out, rel_stages)
    _fill(small_disk, leave)
    code, output = cli(rel_stages, tiny_model("bert"), "-o", out, "--scale", "0.02", "--files", str(files), "--force")
    _assert_kept(out, before, assert_user_error(code, output))
