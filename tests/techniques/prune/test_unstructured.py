"""Sparsity masks: N:M pattern exactness, per-row sparsity, and the plain 'no dense speedup' note."""

import pytest
import torch

from edgelm.core.errors import EdgelmError
from edgelm.techniques.prune.unstructured import DENSE_NOTE, parse_pattern
from tests.techniques.prune.helpers import run, tiny


def test_two_four_keeps_exactly_two_of_every_four(tiny_model, tmp_path):
    bundle = tiny(tiny_model, "llama")
    result = run("prune", bundle, tmp_path, pattern="2:4", calib_samples=2, calib_seq_len=16)
    sparsity = result.metrics["sparsity"]
    assert sparsity["sparsity"] == 0.5 and sparsity["note"] == DENSE_NOTE
    w = result.bundle.model.model.layers[0].mlp.down_proj.weight
    nonzero = (w.reshape(w.shape[0], -1, 4) != 0).sum(-1)
    assert torch.all(nonzero <= 2)
    assert result.metrics["param_reduction"] == 0.0  # masks zero weights, shapes stay


@pytest.mark.parametrize("method", ["wanda", "magnitude"])
def test_unstructured_sparsity_per_row(method, tiny_model, tmp_path):
    bundle = tiny(tiny_model, "bert")
    result = run("prune", bundle, tmp_path, sparsity=0.25, sparsity_method=method, calib_samples=4)
    assert result.metrics["sparsity"]["sparsity"] == 0.25
    w = result.bundle.model.encoder.layer[0].intermediate.dense.weight
    assert torch.all((w == 0).sum(1) == w.shape[1] // 4)
    assert not torch.any(bundle.model.encoder.layer[0].intermediate.dense.weight == 0)  # input untouched


def test_pattern_parsing():
    assert parse_pattern("unstructured") is None and parse_pattern("4:8") == (4, 8)
    for bad in ("2-4", "4:2", "x:y"):
        with pytest.raises(EdgelmError):
            parse_pattern(bad)


def test_nothing_to_do_is_an_error(tiny_model, tmp_path):
    with pytest.raises(EdgelmError, match="nothing to do"):
        run("prune", tiny(tiny_model, "bert"), tmp_path)
