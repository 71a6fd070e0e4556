"""`edgelm search` / `compress --search` from the command line: bad input is one line, and a real (tiny) study
publishes its choice as a run folder that `edgelm run` reproduces."""

import json

import pytest
import yaml
from click.testing import CliRunner

from edgelm.cli import main

pytest.importorskip("optuna")


def run_cli(*args):
    result = CliRunner().invoke(main, list(map(str, args)))
    return result.exit_code, result.output


@pytest.fixture
def embedder(tiny_model):
    return tiny_model("bert", "feature-extraction")


def test_bad_budget_is_one_line(embedder, tmp_path):
    code, out = run_cli("search", embedder, "--budget", "soon", "-o", tmp_path / "s")
    assert code == 2 and "budget 'soon'" in out and "Traceback" not in out


def test_a_recipe_without_a_space_says_what_to_add(embedder, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"name": "mine", "stages": [{"kind": "export"}]}))
    code, out = run_cli("search", embedder, "--recipe", recipe, "-o", tmp_path / "s")
    assert code == 2 and "has no search: block" in out


def test_budget_needs_search(embedder, tmp_path):
    code, out = run_cli("compress", embedder, "--budget", "5m", "-o", tmp_path / "c")
    assert code == 2 and "--budget: only with --search" in out


def test_a_recipe_search_block_drives_the_study(embedder, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": "mine", "stages": [{"kind": "export"}, {"kind": "quantize", "method": "int8-dynamic"}],
        "search": {"space": {"stages.1.per_channel": [True, False]}, "objectives": ["size_mb"], "sampler": "random",
                   "trials": 2}}))
    code, out = run_cli("search", embedder, "--recipe", recipe, "-o", tmp_path / "s", "--json")
    assert code == 0, out
    result = json.loads(out[out.index("{"):])
    assert result["distinct_candidates"] == 2 and result["chosen"] is not None
    best = tmp_path / "s" / "best"
    resolved = yaml.safe_load((best / "recipe.resolved.yaml").read_text())
    chosen = next(r for r in result["trials"] if r["chosen"])
    assert resolved["stages"][1]["per_channel"] == chosen["params"]["stages.1.per_channel"]
    assert (best / "bundle").is_dir() and (tmp_path / "s" / "search.html").read_text().count("<svg") == 1
    code, out = run_cli("run", best / "recipe.resolved.yaml", "-o", tmp_path / "again")
    assert code == 0, out
