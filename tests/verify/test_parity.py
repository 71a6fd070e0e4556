"""Parity figures and failures: numbers that can fail, and an artifact that diverges is named and refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgelm.core.errors import EdgelmError
from edgelm.verify.parity import check_artifact, compare_outputs, failures, verify_artifact
from edgelm.verify.tolerances import Tolerances
from tests.export.shared import exported


def test_compare_outputs_figures():
    ref = np.array([[1.0, 2.0, 3.0], [0.0, 1.0, 0.0]])
    cand = ref + np.array([[0.0, 0.0, 0.5], [0.0, 0.0, 2.0]])
    fig = compare_outputs(ref, cand, "sequence-classification")
    assert fig["max_abs_diff"] == pytest.approx(2.0)
    assert fig["mean_abs_diff"] == pytest.approx(2.5 / 6)
    assert fig["label_agreement"] == 0.5  # row 2's argmax moved from 1 to 2
    assert fig["cosine"] == pytest.approx(1 / np.sqrt(5))


def test_embeddings_have_no_argmax_and_identical_is_perfect():
    x = np.random.default_rng(0).normal(size=(4, 8))
    fig = compare_outputs(x, x.copy(), "feature-extraction")
    assert fig["max_abs_diff"] == 0.0 and fig["cosine"] == pytest.approx(1.0) and "label_agreement" not in fig


def test_shape_mismatch_is_an_error():
    with pytest.raises(EdgelmError, match="shape"):
        compare_outputs(np.zeros((2, 3)), np.zeros((2, 4)), "sequence-classification")


def test_tolerances_decide_and_can_be_loosened():
    fig = {"max_abs_diff": 0.05, "cosine": 0.995, "label_agreement": 0.95}
    assert len(failures(fig, Tolerances())) == 3
    assert failures(fig, Tolerances.quantized()) == []
    assert failures(fig, Tolerances.quantized(min_argmax_agreement=0.99)) == ["argmax agreement 0.950 < 0.99"]


def _perturbed(bundle, scale=0.5):
    model = type(bundle.model)(bundle.model.config)
    model.load_state_dict(bundle.model.state_dict())
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * scale)
    return bundle.with_model(model.eval())


def test_diverging_classifier_is_refused_naming_the_output(tiny_model, tmp_path_factory):
    bundle, result = exported(tiny_model, tmp_path_factory, "bert", "sequence-classification")
    with pytest.raises(EdgelmError, match=r"model.onnx: parity failed on output 'logits'.*not published"):
        check_artifact(_perturbed(bundle), result.path, "onnx")


def test_diverging_decoder_is_refused(tiny_model, tmp_path_factory):
    bundle, result = exported(tiny_model, tmp_path_factory, "llama")
    with pytest.raises(EdgelmError, match="parity failed on output 'logits'"):
        check_artifact(_perturbed(bundle), result.path, "onnx")
    loose = Tolerances(max_abs_diff=None, min_cosine=None, min_argmax_agreement=None, min_greedy_match=None)
    figures = check_artifact(_perturbed(bundle), result.path, "onnx", tolerances=loose)
    assert figures["max_abs_diff"] > 1e-3 and figures["greedy_steps"] == 16


def test_many_texts_run_in_chunks_and_match(tiny_model, tmp_path_factory, monkeypatch):
    """More texts than a .pte's bounded batch (16): the artifact sees chunks of at most 8 rows, results line up."""
    import edgelm.verify.parity as parity
    from edgelm.data.readers import calibration_texts

    bundle, result = exported(tiny_model, tmp_path_factory, "bert", "sequence-classification")
    real_runner, batches = parity.artifact_runner, []

    def counting_runner(path, fmt):
        run = real_runner(path, fmt)
        return lambda feeds: batches.append(len(feeds["input_ids"])) or run(feeds)

    monkeypatch.setattr(parity, "artifact_runner", counting_runner)
    figures = check_artifact(bundle, result.path, "onnx", calibration_texts(20, seed=2))
    assert figures["n"] == 20 and figures["label_agreement"] == 1.0 and max(batches) <= 8, batches


def test_two_all_zero_outputs_agree_and_a_zero_against_a_nonzero_does_not():
    zeros = np.zeros((2, 4))
    fig = compare_outputs(zeros, zeros.copy(), "feature-extraction")
    assert fig["cosine"] == 1.0 and failures(fig, Tolerances()) == []
    one_zero = compare_outputs(zeros, np.vstack([np.zeros(4), np.ones(4)]), "feature-extraction")
    assert one_zero["cosine"] == 0.0 and failures(one_zero, Tolerances(max_abs_diff=None)) == ["cosine 0.000000 < 0.9999"]


def test_a_nan_figure_fails_instead_of_passing_every_comparison():
    fig = {"max_abs_diff": float("nan"), "cosine": float("nan"), "label_agreement": 1.0}
    assert [f.split()[0] for f in failures(fig, Tolerances())] == ["max_abs_diff", "cosine"]


def test_verify_artifact_returns_the_failed_verdict_that_check_artifact_raises(tiny_model, tmp_path_factory):
    bundle, result = exported(tiny_model, tmp_path_factory, "bert", "sequence-classification")
    diverged = _perturbed(bundle)
    verdict = verify_artifact(diverged, result.path, "onnx")
    assert not verdict.ok and verdict.failures and verdict.figures["tolerances"]["min_cosine"] == 0.9999
    with pytest.raises(EdgelmError) as raised:
        check_artifact(diverged, result.path, "onnx")
    assert str(raised.value) == f"model.onnx: parity failed on output 'logits': {verdict.reasons()}; the artifact was not published"
