from pathlib import Path

import pytest

from edgelm.pipeline.compress import build_recipe, default_recipe, implemented_only
from edgelm.core.errors import EdgelmError
from edgelm.core.stage import get_stage
from tests.deliver.runs import LABELLED, tiny_run


def kinds(recipe):
    return [k for k, _ in recipe.steps()]


def test_label_free_encoder_mobile_is_int8_ort_with_fidelity(tiny_model):
    recipe, _ = build_recipe(str(tiny_model("bert")), target="mobile")
    steps = dict(recipe.steps())
    assert kinds(recipe)[-2:] == ["eval", "bench"] and recipe.task == "feature-extraction"
    assert steps["export"].formats == ["onnx", "ort"] and steps["quantize"].method == "int8-dynamic"
    assert steps["eval"].metrics == ["fidelity"] and steps["bench"].runtimes == ["ort-mobile"]


def test_labelled_encoder_fine_tunes_first_and_benches_against_its_int8_baseline(tiny_model, tmp_path, monkeypatch):
    data = tmp_path / "train.tsv"
    data.write_text(LABELLED)
    monkeypatch.setattr(get_stage("distill"), "implemented", False)
    recipe, notes = build_recipe(str(tiny_model("bert")), target="mobile", data=str(data))
    assert recipe.task == "sequence-classification" and kinds(recipe)[0] == "finetune"
    assert any("distill" in n for n in notes) and "distill" not in kinds(recipe)
    assert kinds(recipe).count("finetune") == 2  # the recovery fine-tune stands in for distillation
    steps = recipe.steps()
    baseline = steps[-1][1].baseline
    assert steps[int(baseline[:2]) - 1][0] == "quantize" and baseline.endswith("-quantize")
    assert steps[-2][1].metrics == ["accuracy"]


def test_decoder_mobile_is_int4_with_perplexity_icl_and_decode_bench(tiny_model):
    recipe, _ = build_recipe(str(tiny_model("llama")), target="mobile")
    steps = dict(recipe.steps())
    assert steps["quantize"].method == "int4" and set(steps["eval"].metrics) == {"perplexity", "icl", "generation"}
    assert set(steps["bench"].runtimes) == {"ort-cpu", "ort-mobile"}


@pytest.mark.parametrize("target,runtime", [("cpu", "ort-cpu"), ("cuda", "ort-cuda")])
def test_other_targets_use_plain_onnx_and_their_runtime(tiny_model, tmp_path, target, runtime):
    data = tmp_path / "train.tsv"
    data.write_text(LABELLED)
    for spec in (dict(), dict(data=str(data))):
        recipe, _ = build_recipe(str(tiny_model("bert")), target=target, **spec)
        steps = recipe.steps()
        assert all(c.formats == ["onnx"] for k, c in steps if k == "export")
        assert steps[-1][1].runtimes == [runtime]


def test_unknown_target_and_dangling_baseline_are_errors(monkeypatch):
    with pytest.raises(EdgelmError, match="--target"):
        default_recipe("feature-extraction", "watch", False)
    monkeypatch.setattr(get_stage("quantize"), "implemented", False)
    raw = {"stages": [{"kind": "export"}, {"kind": "quantize"}], "bench": {"baseline": "02-quantize"}}
    with pytest.raises(EdgelmError, match="02-quantize is not a stage that runs"):
        implemented_only(raw)


def test_gates_and_explicit_recipe_and_cli_model_override(tiny_model, tmp_path):
    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text("model: minilm-l6\nstages: [{kind: export}]\n")
    recipe, notes = build_recipe(str(tiny_model("bert")), recipe=recipe_file, gates={"max_size_mb": 5})
    assert recipe.model == str(tiny_model("bert")) and recipe.gates.max_size_mb.value == 5 and notes == []


def test_compress_result_says_where_bundle_and_report_are(tiny_model, tmp_path_factory):
    result = tiny_run("classifier", tiny_model, tmp_path_factory)
    assert Path(result["bundle"], "manifest.json").is_file()
    assert result["report"] and all(Path(p).is_file() for p in result["report"].values())
    assert result["headline"]["accuracy_drop_pt"] == 0.0  # export only: the ONNX model scores like its source
    import json

    evaluated = json.loads(Path(result["out"], "02-eval", "metrics.json").read_text())["metrics"]
    assert set(evaluated["by_runtime"]) == {"ort-mobile", "ort-cpu", "torch"} and evaluated["runtime"] == "ort-mobile"
    assert all(r["accuracy_drop_pt"] == 0.0 for r in evaluated["by_runtime"].values())


@pytest.mark.real
@pytest.mark.slow
def test_compress_with_no_arguments_makes_a_bundle_the_consumer_runs(tmp_path, monkeypatch):
    import json
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
