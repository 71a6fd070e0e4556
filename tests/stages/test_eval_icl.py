import numpy as np
import pytest
from click.testing import CliRunner

from edgelm.cli import main
from edgelm.core.errors import EdgelmError
from edgelm.data.readers import DataConfig
from edgelm.measure import quality
from edgelm.measure.icl_suite import suite_tasks
from edgelm.stages.eval import EvalConfig, evaluate_standalone

ROWS = [("1", "a great fun movie"), ("0", "a boring bad film"), ("1", "really good acting"), ("0", "terrible plot"),
        ("1", "the best story"), ("0", "the worst ending"), ("1", "nice music"), ("0", "awful scene")]


def write(path, header, rows):
    path.write_text(header + "\n" + "\n".join("\t".join(r) for r in rows) + "\n")
    return path


@pytest.fixture
def captured_prompts(monkeypatch):
    """Record the prompts the ICL probe scores (scores: all zero, so label 0 wins)."""
    seen = []

    def fake(model, prompts, continuations, **kw):
        seen.extend(prompts)
        return np.zeros((len(prompts), len(continuations)))

    monkeypatch.setattr(quality, "continuation_logprobs", fake)
    return seen


def evaluate(model, tmp_path, data=None, **config):
    spec = DataConfig(path=str(data)) if data else None
    return evaluate_standalone(str(model), EvalConfig(metrics=["icl"], k_shot=2, **config), data=spec)


def test_user_data_is_probed_with_the_generic_template_and_its_label_names(tiny_model, tmp_path, captured_prompts):
    data = write(tmp_path / "dev.tsv", "label\tsentence", [("good" if y == "1" else "bad", t) for y, t in ROWS])
    result = evaluate(tiny_model("llama"), tmp_path, data)
    assert result["icl_data"] == f"{data} (queries: a held-out 10%, demos: the rest)"
    assert sorted(result["label_words"]) == ["bad", "good"]
    assert all(p.startswith("Input: ") and p.endswith("\nLabel:") for p in captured_prompts)
    assert any("\nLabel: good" in p for p in captured_prompts)


def test_template_and_label_word_overrides_reach_the_prompts(tiny_model, tmp_path, captured_prompts):
    data = write(tmp_path / "dev.tsv", "label\tsentence", ROWS)
    result = evaluate(tiny_model("llama"), tmp_path, data, icl_template="Q: {text}\\nA: {label}",
                      label_words=["awful", "nice"])
    assert result["label_words"] == ["awful", "nice"] and result["icl_template"] == "Q: {text}\nA: {label}"
    assert all(p.endswith("\nA:") for p in captured_prompts) and any("\nA: nice" in p for p in captured_prompts)


def test_without_data_the_builtin_probe_runs_and_says_so(tiny_model, tmp_path, captured_prompts):
    result = evaluate(tiny_model("llama"), tmp_path)
    assert result["icl_data"] == "built-in sentiment probe" and result["label_words"] == ["negative", "positive"]
    assert captured_prompts[0].startswith("Review: ") and captured_prompts[0].endswith("\nSentiment:")


def test_a_text_corpus_gets_the_builtin_probe_and_a_line_saying_so(tiny_model, tmp_path, captured_prompts, capsys,
                                                                   monkeypatch):
    monkeypatch.delenv("EDGELM_QUIET", raising=False)
    corpus = tmp_path / "prose.txt"
    corpus.write_text("Some plain prose without any labels.\n" * 20)
    result = evaluate(tiny_model("llama"), tmp_path, corpus)
    assert result["icl_data"].startswith("built-in sentiment probe")
    assert "in-context probe: the built-in sentiment probe" in " ".join(capsys.readouterr().err.split())


def test_data_without_a_label_column_fails_instead_of_using_the_builtin_probe(tiny_model, tmp_path):
    data = write(tmp_path / "notes.tsv", "sentence", [(t,) for _, t in ROWS])
    with pytest.raises(EdgelmError, match="notes.tsv: the ICL probe needs a label column"):
        evaluate(tiny_model("llama"), tmp_path, data)
    result = CliRunner().invoke(main, ["eval", str(tiny_model("llama")), "--metric", "icl", "--data", str(data)])
    assert result.exit_code == 2 and "notes.tsv" in result.output and "built-in" in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output


def test_too_few_examples_per_label_for_k_shots_fails_with_one_line(tiny_model, tmp_path):
    data = write(tmp_path / "tiny.tsv", "label\tsentence", ROWS[:3])
    with pytest.raises(EdgelmError, match="tiny.tsv: the 4-shot ICL probe needs at least 2 examples of each label; too few for"):
        evaluate_standalone(str(tiny_model("llama")), EvalConfig(metrics=["icl"], k_shot=4),
                            data=DataConfig(path=str(data)))


def test_icl_suite_reports_one_figure_per_task_and_zero_drops_against_itself(tiny_model):
    model = str(tiny_model("llama"))
    result = evaluate_standalone(model, EvalConfig(metrics=["icl-suite"], k_shot=2), reference=model)
    tasks = set(suite_tasks())
    assert len(tasks) >= 6 and set(result["icl_suite"]) == tasks
    assert all(0.0 <= v <= 100.0 for v in result["icl_suite"].values())
    assert result["icl_suite_drops"] == {t: 0.0 for t in tasks} and result["icl_suite_drop_pt"] == 0.0
    assert result["icl_suite_accuracy"] == pytest.approx(sum(result["icl_suite"].values()) / len(tasks), abs=1e-3)


def test_a_bad_template_on_the_cli_is_one_line_exit_2():
    result = CliRunner().invoke(main, ["eval", "smollm2-135m", "--metric", "icl", "--icl-template", "Q: {label} {text}"])
    assert result.exit_code == 2 and "must contain {text} once and end with {label}" in result.output
    assert len(result.output.strip().splitlines()) == 1
