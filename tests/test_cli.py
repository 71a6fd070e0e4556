"""The CLI contract: exit codes, one-line errors without tracebacks, --json with schema_version."""

import json
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from edgelm.cli import main


def run_cli(*args):
    result = CliRunner().invoke(main, list(map(str, args)))
    return result.exit_code, result.output  # click >= 8.2 mixes stderr into output


def test_info_json(tiny_model):
    code, out = run_cli("info", tiny_model("llama"), "--json")
    assert code == 0
    facts = json.loads(out[out.index("{"):])
    assert facts["schema_version"] == 1 and facts["kv_heads"] == 2 and facts["task"] == "causal-lm"


@pytest.mark.parametrize("args,message", [
    (["info", "/no/such/model"], "no such file"),
    (["run", "/no/such/recipe.yaml"], "no such recipe file"),
    (["export", "/no/such/model", "-o", "/tmp/edgelm-test-never-written"], "no such file"),
])
def test_bad_input_is_one_line_exit_2(args, message):
    code, out = run_cli(*args)
    assert code == 2 and message in out
    assert "Traceback" not in out and len([l for l in out.splitlines() if l.startswith("error:")]) == 1


def test_bad_recipe_exit_2(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("stages:\n  - kind: nope\n")
    code, out = run_cli("run", recipe, "-o", tmp_path / "out")
    assert code == 2 and "unknown stage kind 'nope'" in out


@pytest.mark.parametrize("kind", ["export", "quantize", "finetune", "lowrank", "prune", "distill"])
def test_stage_command_has_an_option_per_config_field_with_its_help(kind):
    from edgelm.core.stage import get_stage

    stage, command = get_stage(kind), main.commands[kind]
    helps = {p.name: p.help for p in command.params if isinstance(p, click.Option)}
    assert command.help == f"{stage.summary}."
    for name, field in stage.Config.model_fields.items():
        assert helps[name].startswith(field.description), name


def test_run_writes_the_report(tiny_model, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"model: {tiny_model('bert')}\nstages: [{{kind: lowrank, method: svd, ratio: 0.5}}]\n")
    code, out = run_cli("run", recipe, "-o", tmp_path / "out")
    assert code == 0, out
    assert "01-lowrank" in (tmp_path / "out" / "report.md").read_text() and (tmp_path / "out" / "report.html").is_file()


def test_stages_lists_every_kind_with_parameters():
    code, out = run_cli("stages", "--json")
    table = json.loads(out)["stages"]
    assert {"export", "quantize", "finetune", "lowrank", "prune", "distill", "eval", "bench"} <= set(table)
    assert all(p["help"] for entry in table.values() for p in entry["parameters"].values())


def test_real_process_exit_codes_and_no_traceback(tmp_path):
    bad = subprocess.run([sys.executable, "-m", "edgelm", "info", str(tmp_path)], capture_output=True, text=True)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "no config.json" in bad.stderr
    usage = subprocess.run([sys.executable, "-m", "edgelm", "info"], capture_output=True, text=True)
    assert usage.returncode == 2


def test_debug_shows_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "edgelm", "--debug", "info", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" in proc.stderr
