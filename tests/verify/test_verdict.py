"""One verdict type and one tolerance table: callers choose to raise or record, every threshold has one home."""

from __future__ import annotations

import numpy as np
import pytest

from edgelm.core.errors import EdgelmError
from edgelm.verify import fidelity, parity
from edgelm.verify.tolerances import QUANTIZED_VS_FLOAT, QUANTIZED_VS_TORCH, Tolerances, misses
from edgelm.verify.verdict import Verdict, cosine_rows


def test_cosine_rows_counts_two_zero_rows_as_agreeing():
    a = np.array([[0.0, 0.0], [3.0, 4.0], [0.0, 0.0], [1.0, 0.0]])
    b = np.array([[0.0, 0.0], [6.0, 8.0], [1.0, 1.0], [0.0, 1.0]])
    assert cosine_rows(a, b).tolist() == pytest.approx([1.0, 1.0, 0.0, 0.0])


@pytest.mark.parametrize("value", [0.0, 1e-30, 1e20, -3.0])
def test_identical_constant_outputs_agree_whatever_their_norm(value):
    rows = np.full((3, 8), value, dtype=np.float32)  # 1e-30: the norms' product underflows; 1e20: it overflows
    assert cosine_rows(rows, rows.copy()).tolist() == [1.0, 1.0, 1.0]


def test_a_zero_row_is_compared_by_max_abs_diff():
    zero = np.zeros((3, 4))
    near = np.array([[1e-9, 0, 0, 0], [0, 0, 0, 1e-3], [np.nan, 0, 0, 0]])
    assert cosine_rows(zero, near).tolist() == [1.0, 0.0, 0.0]
    figures = parity.compare_outputs(zero, zero, "feature-extraction")
    assert figures["cosine"] == 1.0 and parity.failures(figures, Tolerances()) == []


def test_cosine_rows_keeps_the_inputs_precision():
    x = np.ones((2, 3), dtype=np.float32)
    assert cosine_rows(x, x).dtype == np.float32 and cosine_rows(x.astype(np.float64), x).dtype == np.float64


def test_a_failed_verdict_raises_or_is_recorded_as_the_caller_chooses():
    verdict = Verdict.of({"cosine": 0.5}, ["cosine 0.5 < 0.9", "argmax 0.1 < 0.8"])
    with pytest.raises(EdgelmError, match=r"^m.onnx: cosine 0.5 < 0.9; argmax 0.1 < 0.8; not published$"):
        verdict.raise_if_failed("m.onnx: ", "; not published")
    assert verdict.recorded("m.onnx: ") == {"cosine": 0.5, "ok": False, "error": "m.onnx: cosine 0.5 < 0.9; argmax 0.1 < 0.8"}
    passed = Verdict.of({"cosine": 1.0}, [])
    passed.raise_if_failed("never raised: ")
    assert passed.recorded("m.onnx: ") == {"cosine": 1.0, "ok": True}


def test_upper_and_lower_bounds_and_switched_off_checks():
    assert misses("perplexity_ratio", 1.2, 1.1) and not misses("perplexity_ratio", 1.0, 1.1)
    assert misses("label_agreement", 0.8, 0.9) and not misses("label_agreement", 0.95, 0.9)
    assert not misses("cosine", 0.0, None) and misses("cosine", float("nan"), 0.5)


def test_quantized_check_reads_the_method_row_and_an_override():
    figures = {"sqnr_db": 20.0, "label_agreement": 0.92, "perplexity_ratio": 1.09}
    verdict = fidelity.check(figures, "int8-static")
    assert verdict.checks["label_agreement"] == {"value": 0.92, "tolerance": 0.9, "ok": True}
    assert verdict.ok and verdict.failures == [] and verdict.checks["perplexity_ratio"]["tolerance"] == 1.1
    strict = fidelity.check(figures, "int8-static", {"label_agreement": 0.95})
    assert not strict.ok and strict.failures == ["label_agreement=0.92 (needs >= 0.95)"]
    assert fidelity.failures(strict.checks) == strict.failures


def test_the_thresholds_are_the_ones_the_project_measured_with():
    assert Tolerances() == Tolerances(1e-3, 0.9999, 1.0, 16, 1.0)
    assert Tolerances.quantized(**QUANTIZED_VS_TORCH["int4"]) == Tolerances(None, 0.9, 0.75, 16, None)
    assert QUANTIZED_VS_FLOAT["label_agreement"]["int8-dynamic"] == 0.95 and QUANTIZED_VS_FLOAT["perplexity_ratio"]["int4"] == 1.08
