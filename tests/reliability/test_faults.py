"""Faults a user meets: a half-done swap, an empty recipe, a degenerate tokenizer, a full disk, two runs at once,
a damaged cache entry. Each ends with one line and exit 2 (or success), and never a damaged previous output."""

from __future__ import annotations

import os

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
