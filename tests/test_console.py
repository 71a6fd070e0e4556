"""The console of a real `edgelm run` (tiny model, ONNX + ORT export: the ORT converter logs an INFO line of its
own): edgelm's lines only, no runs of blank lines; --quiet prints the final line alone; --verbose lets the
converter's line through."""

import os
import re
import subprocess
import sys

import pytest
import yaml

THIRD_PARTY = re.compile(r"\[(INFO|WARNING|DEBUG)\]|^[WIE]\d{4} \d\d:\d\d|Warning|warn\(|onnxscript|torch\.onnx|"
                         r"^\d{4}-\d\d-\d\d[ T]\d\d:\d\d|Failed to load|it/s\]|ort_format_model", re.M)


def edgelm(*args, cwd):
    env = {k: v for k, v in os.environ.items() if k not in ("EDGELM_QUIET", "EDGELM_VERBOSE")}
    done = subprocess.run([sys.executable, "-m", "edgelm", *args], capture_output=True, text=True, cwd=cwd, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def recipe(tiny_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("console")
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump({"name": "console", "model": str(tiny_model("bert")),
                                    "stages": [{"kind": "export", "formats": ["onnx", "ort"]}]}))
    return path


def test_the_console_has_edgelm_lines_only_and_no_blank_runs(recipe):
    text = edgelm("run", str(recipe), "-o", "normal", cwd=recipe.parent)
    assert not THIRD_PARTY.search(text), text
    assert "\n\n\n" not in text and "\n\n" not in text.strip(), text
    assert re.search(r"^✓ 01-export +onnx\+ort  [0-9.]+ MB  [0-9.]+ s$", text, re.M), text
    quiet = edgelm("run", str(recipe), "-o", "normal", "--quiet", cwd=recipe.parent)  # resumes: nothing runs
    lines = quiet.strip().splitlines()  # the headline card, then where the run is
    assert [line.split()[0] for line in lines] == ["ship", "size", "speed", "quality", "verified", "gates", "run"]
    assert lines[-1] == f"run finished: normal (report: {os.path.join('normal', 'report.md')})"


@pytest.mark.slow
def test_verbose_lets_third_party_lines_through(recipe):
    text = edgelm("--verbose", "run", str(recipe), "-o", "verbose", cwd=recipe.parent)
    assert "ort_format_model" in text
