"""The recipe `edgelm compress` picks: per task family, labels and target (the run itself: tests/deliver)."""

import pytest

from edgelm.core.errors import EdgelmError
from edgelm.pipeline.compress import build_recipe, default_recipe
from tests.deliver.runs import LABELLED


def kinds(recipe):
    return [k for k, _ in recipe.steps()]


def test_label_free_encoder_mobile_is_int8_ort_with_fidelity(tiny_model):
    recipe = build_recipe(str(tiny_model("bert")), target="mobile")
    steps = dict(recipe.steps())
    assert kinds(recipe)[-2:] == ["eval", "bench"] and recipe.task == "feature-extraction"
    assert steps["export"].formats == ["onnx", "ort"] and steps["quantize"].method == "int8-dynamic"
    assert steps["eval"].metrics == ["fidelity"] and steps["bench"].runtimes == ["ort-mobile"]


def test_labelled_encoder_fine_tunes_first_and_benches_against_its_int8_baseline(tiny_model, tmp_path):
    data = tmp_path / "train.tsv"
    data.write_text(LABELLED)
    recipe = build_recipe(str(tiny_model("bert")), target="mobile", data=str(data))
    assert recipe.task == "sequence-classification"
    assert kinds(recipe) == ["finetune", "export", "quantize", "prune", "distill", "export", "quantize", "eval", "bench"]
    steps = recipe.steps()
    baseline = steps[-1][1].baseline
    assert steps[int(baseline[:2]) - 1][0] == "quantize" and baseline.endswith("-quantize")
    assert steps[-2][1].metrics == ["accuracy"]


def test_decoder_mobile_is_int4_with_perplexity_icl_and_decode_bench(tiny_model):
    recipe = build_recipe(str(tiny_model("llama")), target="mobile")
    steps = dict(recipe.steps())
    assert steps["quantize"].method == "int4" and set(steps["eval"].metrics) == {"perplexity", "kld", "icl", "icl-suite", "generation"}
    assert set(steps["bench"].runtimes) == {"ort-cpu", "ort-mobile"}
    assert steps["bench"].speculative == "lookup"  # measured on the prompt set; the bundle uses it only if it helps


def test_decoder_icl_probe_is_left_out_for_an_unlabelled_table_and_kept_for_a_labelled_one(tiny_model, tmp_path,
                                                                                            capsys, monkeypatch):
    monkeypatch.delenv("EDGELM_QUIET", raising=False)
    unlabelled, labelled, prose = tmp_path / "notes.csv", tmp_path / "train.tsv", tmp_path / "prose.txt"
    unlabelled.write_text("text\n" + "".join(f"note number {i}\n" for i in range(40)))
    labelled.write_text(LABELLED)
    prose.write_text("Some prose for perplexity.\n" * 20)
    metrics = lambda data: dict(build_recipe(str(tiny_model("llama")), data=str(data)).steps())["eval"].metrics
    assert "icl" not in metrics(unlabelled)
    assert "in-context probe left out: notes.csv has no label column" in " ".join(capsys.readouterr().err.split())
    assert "icl" in metrics(labelled) and "icl" in metrics(prose)
    assert "probe left out" not in capsys.readouterr().err


@pytest.mark.parametrize("target,runtime", [("cpu", "ort-cpu"), ("cuda", "ort-cuda")])
def test_other_targets_use_plain_onnx_and_their_runtime(tiny_model, tmp_path, target, runtime):
    data = tmp_path / "train.tsv"
    data.write_text(LABELLED)
    for spec in (dict(), dict(data=str(data))):
        recipe = build_recipe(str(tiny_model("bert")), target=target, **spec)
        steps = recipe.steps()
        assert all(c.formats == ["onnx"] for k, c in steps if k == "export")
        assert steps[-1][1].runtimes == [runtime]


def test_unknown_target_is_an_error():
    with pytest.raises(EdgelmError, match="--target"):
        default_recipe("feature-extraction", "watch", False)


def test_gates_and_explicit_recipe_and_cli_model_override(tiny_model, tmp_path):
    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text("model: minilm-l6\nstages: [{kind: export}]\n")
    recipe = build_recipe(str(tiny_model("bert")), recipe=recipe_file, gates={"max_size_mb": 5})
    assert recipe.model == str(tiny_model("bert")) and recipe.gates.max_size_mb.value == 5


def said(capsys) -> str:
    return " ".join(capsys.readouterr().err.split())  # rich wraps long lines at the terminal width


SCORES = "text,score\n" + "".join(f"answer {i},{i % 4}\n" for i in range(12))
NO_LABELS = "text\n" + "".join(f"sentence number {i}\n" for i in range(6))
TREC_LIKE = "label\tquestion\n" + "".join(f"{'NUM LOC ABBR'.split()[i % 3]}\tq {i}?\n" for i in range(9))


@pytest.mark.parametrize("name,text,line", [
    ("train.csv", SCORES, "labelled path: column 'score' has 4 labels (0-3) -> fine-tune a 4-class classifier"),
    ("train.csv", NO_LABELS, "label-free path: no label column in train.csv (columns: text) -> sentence embedder"),
    ("train.tsv", TREC_LIKE, "labelled path: column 'label' has 3 labels (ABBR, LOC, NUM) -> fine-tune a 3-class"),
])
def test_the_path_taken_is_said_in_one_line_with_its_reason(tiny_model, tmp_path, capsys, monkeypatch, name, text, line):
    monkeypatch.delenv("EDGELM_QUIET", raising=False)
    data = tmp_path / name
    data.write_text(text)
    recipe = build_recipe(str(tiny_model("bert")), target="mobile", data=str(data))
    assert line in said(capsys)
    assert (recipe.task == "sequence-classification") == line.startswith("labelled")


def test_a_damaged_edgelm_json_is_one_line_naming_the_file(tmp_path):
    from edgelm.core.errors import EdgelmError
    from edgelm.pipeline.compress import detect_task

    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "edgelm.json").write_text('{"source": "x"}')
    with pytest.raises(EdgelmError, match="edgelm.json"):
        detect_task(str(tmp_path))
