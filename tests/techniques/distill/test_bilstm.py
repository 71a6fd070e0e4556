"""distill --student bilstm: augmentation, vocabulary pruning (specials kept, unseen ids -> UNK), padding-free
results, and a tiny teacher distilled end to end: trains, reloads, exports with parity and quantizes int8."""

from __future__ import annotations

import json

import torch

from edgelm.models.bilstm import BiLSTMForSequenceClassification
from edgelm.models.loading import load_bundle, load_model
from edgelm.pipeline.recipe import parse_recipe
from edgelm.pipeline.runner import run_recipe
from edgelm.techniques.distill.augment import augment
from edgelm.techniques.distill.stage import DistillConfig
from edgelm.techniques.distill.students.bilstm import build_student, token_ids
from edgelm.models.text_tasks import classification_features
from tests.stages.test_all_stages import LABELLED

TEXTS = [line.split("\t", 1)[1] for line in LABELLED.splitlines()[1:]]


def test_augmentation_is_seeded_new_and_uses_the_mask_token():
    made = augment(TEXTS[:10], copies=3, mask_token="[MASK]", mask_prob=0.3, seed=1)
    assert made == augment(TEXTS[:10], copies=3, mask_token="[MASK]", mask_prob=0.3, seed=1)
    assert 10 < len(made) <= 30 and not set(made) & set(TEXTS)
    assert any("[MASK]" in t for t in made) and any(len(t.split()) < 4 for t in made)  # masks and n-grams
    assert augment([], copies=3, mask_token="[MASK]") == []


def test_pruned_vocabulary_keeps_specials_and_reads_unseen_tokens_as_unk(tiny_model):
    teacher = load_model(str(tiny_model("bert", "sequence-classification")), task="sequence-classification")
    tok = teacher.tokenizer
    features = classification_features(tok, ["a great movie", "a bad film"], [1, 0], 16)
    kept = token_ids(tok, features, prune=True)
    assert set(tok.all_special_ids) <= set(kept) and len(kept) < len(tok)
    student = build_student(tok, teacher.model, kept, DistillConfig(embedding_size=8, lstm_hidden_size=8)).eval()
    rows = student.id_map[torch.tensor(kept)]
    assert len(set(rows.tolist())) == len(kept), "every kept token has its own row"
    unseen = tok("boring terrible plot")["input_ids"][1:-1]
    assert not set(unseen) & set(kept)
    assert set(student.id_map[torch.tensor(unseen)].tolist()) == {int(student.id_map[tok.unk_token_id])}
    ids = tok(["boring terrible plot", "a great movie"], padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = student(**ids).logits
        alone = student(**tok(["a great movie"], return_tensors="pt")).logits
    assert logits.shape == (2, 2) and torch.isfinite(logits).all()
    torch.testing.assert_close(logits[1:], alone, rtol=1e-5, atol=1e-6)  # padding changes nothing


def test_tiny_teacher_distils_into_a_bilstm_that_exports_with_parity_and_int8(tiny_model, tmp_path):
    data = tmp_path / "d.tsv"
    data.write_text(LABELLED)
    recipe = parse_recipe({"model": str(tiny_model("bert", "sequence-classification")), "data": str(data), "stages": [
        {"kind": "distill", "student": "bilstm", "epochs": 2, "batch_size": 8, "embedding_size": 16,
         "lstm_hidden_size": 64, "precision": "fp32"},
        {"kind": "export", "formats": ["onnx", "ort"]}, {"kind": "quantize", "method": "int8-dynamic"}]})
    run_recipe(recipe, tmp_path / "run")
    read = lambda stage: json.loads((tmp_path / "run" / stage / "metrics.json").read_text())["metrics"]  # noqa: E731
    distilled = read("01-distill")
    assert distilled["student"] == "bilstm" and distilled["augmented_samples"] > 0
    assert distilled["eval_accuracy"] == 100.0  # the hard labels of a separable set are learnt
    student = load_bundle(tmp_path / "run" / "01-distill")
    assert isinstance(student.model, BiLSTMForSequenceClassification) and student.labels == ["LABEL_0", "LABEL_1"]
    assert student.model.config.table_size == distilled["vocab_kept"] < len(student.tokenizer)
    parity = read("02-export")["parity"]
    assert parity["onnx"]["max_abs_diff"] <= 1e-4 and parity["ort"]["max_abs_diff"] <= 1e-4
    quantized = read("03-quantize")
    assert quantized["parity"]["ok"] and quantized["quantization"]["op_counts"].get("DynamicQuantizeLSTM") == 1  # both directions, one node


def test_held_out_selection_keeps_the_eval_data_unseen(tiny_model, tmp_path):
    """select_on: held-out picks the epoch on a share of --data even when the run has --eval-data."""
    data, dev = tmp_path / "d.tsv", tmp_path / "dev.tsv"
    data.write_text(LABELLED)
    dev.write_text("\n".join(LABELLED.splitlines()[:11]) + "\n")  # header + 10 rows
    stage = {"kind": "distill", "student": "bilstm", "epochs": 1, "batch_size": 8, "embedding_size": 8,
             "lstm_hidden_size": 8, "augment_copies": 0, "precision": "fp32"}
    for select_on, eval_rows in (("held-out", 4), ("eval-data", 10)):
        recipe = parse_recipe({"model": str(tiny_model("bert", "sequence-classification")), "data": str(data),
                               "eval_data": str(dev), "stages": [{**stage, "select_on": select_on}]})
        run_recipe(recipe, tmp_path / select_on)
        metrics = json.loads((tmp_path / select_on / "01-distill" / "metrics.json").read_text())["metrics"]
        assert (metrics["eval_samples"], metrics["samples"]) == (eval_rows, 40 - 4 * (select_on == "held-out"))
