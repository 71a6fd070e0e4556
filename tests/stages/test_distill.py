"""distill: the student moves towards the teacher; layer maps; teacher resolution."""

import pytest
import torch

from edgelm.data.readers import DataConfig
from edgelm.techniques.distill.losses import layer_map
from edgelm.core.errors import EdgelmError
from tests.techniques.prune.helpers import output, run, tiny
from tests.stages.test_all_stages import LABELLED


def kl_to_teacher(student, teacher, tokenizer) -> float:
    """KL(teacher ‖ student) on the training sentences."""
    texts = [line.split("\t", 1)[1] for line in LABELLED.splitlines()[1:]]
    ids = tokenizer(texts, padding=True, return_tensors="pt")["input_ids"]
    s, t = output(student, ids), output(teacher, ids)
    return torch.nn.functional.kl_div(s.log_softmax(-1), t.log_softmax(-1), log_target=True, reduction="batchmean").item()


def test_layer_dropped_classifier_moves_towards_teacher(tiny_model, tmp_path):
    teacher = tiny(tiny_model, "bert", "sequence-classification")
    data = tmp_path / "d.tsv"
    data.write_text(LABELLED)
    student = run("prune", teacher, tmp_path / "p", drop_layers=1, ffn=0.5, round_to=1, calib_samples=8).bundle
    assert student.extra["kept_layers"] in ([0], [1])
    with torch.no_grad():  # a random tiny teacher is nearly constant; give the student a clear bias to unlearn
        student.model.classifier.bias.add_(torch.tensor([1.5, -1.5]))
    result = run("distill", student, tmp_path / "d", data=DataConfig(path=str(data)), initial=teacher, epochs=3,
                 batch_size=8, learning_rate=1e-2, hard_weight=0.0)
    m = result.metrics
    assert m["layer_map"] == student.extra["kept_layers"] and m["teacher"] == "input"
    tok = teacher.tokenizer
    assert kl_to_teacher(result.bundle.model, teacher.model, tok) < kl_to_teacher(student.model, teacher.model, tok)
    assert 0.0 <= m["teacher_eval_accuracy"] <= 100.0 and 0.0 <= m["eval_accuracy"] <= 100.0  # percentage points
    assert m["accuracy_drop_pt"] == round(m["teacher_eval_accuracy"] - m["eval_accuracy"], 3)


def test_causal_lm_without_data_distills_on_calibration_prose(tiny_model, tmp_path):
    teacher = tiny(tiny_model, "qwen2")
    student = run("prune", teacher, tmp_path / "p", ffn=0.5, round_to=8, calib_samples=4, calib_seq_len=16).bundle
    result = run("distill", student, tmp_path / "d", max_samples=32, max_steps=4, batch_size=8, max_length=32,
                 learning_rate=1e-3)
    assert result.metrics["steps"] == 4 and set(result.metrics["loss_terms"]) == {"kd", "hard", "hidden"}
    assert result.bundle.model is not student.model


def test_layer_map_rules(tiny_model):
    model = tiny(tiny_model, "llama").model  # 2 layers
    assert layer_map(model, model, [], None) == [0, 1]
    assert layer_map(model, model, [1, 1], None) == [1, 1]
    with pytest.raises(EdgelmError, match="layer_map"):
        layer_map(model, model, [0, 2], None)


def test_teacher_of_another_task_is_refused(tiny_model, tmp_path):
    student = tiny(tiny_model, "bert", "sequence-classification")
    with pytest.raises(EdgelmError, match="task"):
        run("distill", student, tmp_path, teacher=str(tiny_model("bert")), data=None)
