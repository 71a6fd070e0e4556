"""Faults a user meets: a half-done swap, an empty recipe, a degenerate tokenizer, a full disk, two runs at once,
a damaged cache entry. Each ends with one line and exit 2 (or success), and never a damaged previous output."""

from __future__ import annotations

import json
import os
import shutil

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
