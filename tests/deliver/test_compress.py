"""`edgelm compress` end to end on tiny models: the run, its report and the app bundle."""

import json
from pathlib import Path

import pytest

from tests.deliver.runs import tiny_run


def test_compress_result_says_where_bundle_and_report_are(tiny_model, tmp_path_factory):
    result = tiny_run("classifier", tiny_model, tmp_path_factory)
    assert Path(result["bundle"], "manifest.json").is_file()
    assert result["report"] and all(Path(p).is_file() for p in result["report"].values())
    assert result["headline"]["accuracy_drop_pt"] == 0.0  # export only: the ONNX model scores like its source
    evaluated = json.loads(Path(result["out"], "02-eval", "metrics.json").read_text())["metrics"]
    assert set(evaluated["by_runtime"]) == {"ort-mobile", "ort-cpu", "torch"} and evaluated["runtime"] == "ort-mobile"
    assert all(r["accuracy_drop_pt"] == 0.0 for r in evaluated["by_runtime"].values())


@pytest.mark.real
@pytest.mark.slow
def test_compress_with_no_arguments_makes_a_bundle_the_consumer_runs(tmp_path, monkeypatch):
    import subprocess
    import sys

    from click.testing import CliRunner

    from edgelm.cli import main
    from tests.conftest import require_builtin

    require_builtin("minilm-l6")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["compress", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["headline"]["fidelity_cosine_mean"] > 0.99 and out["headline"]["compression"] > 3
    proc = subprocess.run([sys.executable, "-m", "edgelm.consumer", out["bundle"], "a delightful film"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["dim"] == 384
