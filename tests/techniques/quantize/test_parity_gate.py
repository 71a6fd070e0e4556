"""With labels, the quantize stage's label-agreement gate reads the whole labelled set, not the 32 parity texts:
a small sample can fail a good artifact (3 unlucky flips) or pass a bad one."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from edgelm.techniques.quantize.workflow import gate_agreement_on_labelled


def _parity(sampled: float, labelled: float) -> dict:
    return {"samples": 32, "figures": {"sqnr_db": 24.0, "label_agreement": sampled},
            "checks": {"label_agreement": {"value": sampled, "tolerance": 0.95, "ok": sampled >= 0.95}},
            "ok": sampled >= 0.95, "accuracy_samples": 872, "labelled_label_agreement": labelled}


@pytest.mark.parametrize("sampled,labelled,ok", [(0.9062, 0.9839, True), (1.0, 0.90, False)])
def test_gate_uses_the_labelled_set(sampled, labelled, ok):
    parity = _parity(sampled, labelled)
    gate_agreement_on_labelled(parity, SimpleNamespace(method="int8-dynamic", tolerance=[]))
    assert parity["ok"] is ok and parity["checks"]["label_agreement"]["value"] == labelled
    assert parity["figures"]["label_agreement"] == labelled and parity["label_agreement_samples"] == 872
    assert "labelled_label_agreement" not in parity


def test_a_user_tolerance_still_applies():
    parity = _parity(0.9062, 0.9839)
    gate_agreement_on_labelled(parity, SimpleNamespace(method="int8-dynamic", tolerance=["label_agreement=0.99"]))
    assert not parity["ok"] and parity["checks"]["label_agreement"]["tolerance"] == 0.99
