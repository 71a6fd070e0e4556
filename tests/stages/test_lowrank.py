"""lowrank: plain and activation-aware SVD, rank rules, reload parity."""

import copy

import pytest
import torch

from edgelm.models.loading import load_bundle
from edgelm.techniques.prune.calibrate import InputStats, calibration_batches, run_batches
from edgelm.techniques.lowrank.stage import LowrankConfig, choose_rank, factorize_into, select_targets
from edgelm.models.structure import LowRankLinear
from tests.techniques.prune.helpers import output, run, tiny


def test_ratio_removes_that_share_of_each_factorized_layer(tiny_model, tmp_path):
    bundle = tiny(tiny_model, "llama")
    result = run("lowrank", bundle, tmp_path, ratio=0.4, method="svd")
    rows = [r for r in result.metrics["layers"] if r["factorized"]]
    assert rows and all(r["params_after"] <= 0.6 * r["params_before"] + r["in"] + r["out"] for r in rows)
    assert result.metrics["params_after"] < result.metrics["params_before"]
    assert isinstance(result.bundle.model.get_submodule(rows[0]["path"]), LowRankLinear)
    assert not any(isinstance(m, LowRankLinear) for m in bundle.model.modules())  # input untouched


def test_never_factorizes_where_rank_saves_nothing(tiny_model, tmp_path):
    bundle = tiny(tiny_model, "bert")
    result = run("lowrank", bundle, tmp_path, rank=16, method="svd")
    for row in result.metrics["layers"]:
        square = row["in"] == row["out"] == 32  # rank 16 costs 16 * 64 = 32 * 32: no saving, left alone
        assert row["factorized"] is not square
        if square:
            assert row["reason"] == "rank does not reduce parameters"
    assert result.metrics["factorized"] == 4  # the 32x64 FFN layers: 16 * 96 < 2048
    assert result.metrics["not_factorized"] == len(result.metrics["layers"]) - 4


def test_energy_rule_and_include_exclude(tiny_model):
    s = torch.tensor([4.0, 2.0, 1.0, 0.5])
    assert choose_rank(s, 10, 10, LowrankConfig(energy=0.8)) == 2  # energy 16/21.25 = 0.75 after one value
    assert choose_rank(s, 10, 10, LowrankConfig(energy=0.7)) == 1
    assert choose_rank(s, 10, 10, LowrankConfig(ratio=0.5)) == 2  # 0.5 * 100 / 20
    model = tiny(tiny_model, "llama").model
    targets = select_targets(model, include=["lm_head"], exclude=["*.k_proj", "*.v_proj"])
    assert "lm_head" in targets and not any(t.endswith(("k_proj", "v_proj")) for t in targets)


def test_activation_aware_has_lower_error_on_calibration_activations(tiny_model):
    bundle = tiny(tiny_model, "llama")
    path = "model.layers.0.mlp.down_proj"
    batches = calibration_batches(bundle, n_samples=8, seq_len=32)
    stats = InputStats(bundle.model, [path], gram=True)
    run_batches(bundle.model, batches)
    stats.remove()
    cfg = LowrankConfig(rank=8)
    errors = {}
    for name, gram in (("plain", None), ("aware", stats.gram[path])):
        model = copy.deepcopy(bundle.model)
        factorize_into(model, path, cfg, gram)
        approx = model.get_submodule(path)
        w_hat = (approx[1].weight @ approx[0].weight).double()
        diff = bundle.model.get_submodule(path).weight.double() - w_hat
        g = stats.gram[path].double()
        errors[name] = (torch.trace(diff @ g @ diff.T) / 1).item()  # ‖(W − PQ)Xᵀ‖² on the calibration inputs
    assert errors["aware"] < errors["plain"]


@pytest.mark.parametrize("arch", ["gpt2", "gpt_neox", "qwen3"])
def test_factorized_model_reloads_exactly(arch, tiny_model, tmp_path):
    bundle = tiny(tiny_model, arch)
    result = run("lowrank", bundle, tmp_path / "w", ratio=0.3, calib_samples=4, calib_seq_len=16)
    result.bundle.save(tmp_path / "out")
    reloaded = load_bundle(tmp_path / "out")
    assert sum(isinstance(m, LowRankLinear) for m in reloaded.model.modules()) == result.metrics["factorized"] > 0
    torch.testing.assert_close(output(reloaded.model), output(result.bundle.model))


def test_one_rank_rule_only():
    with pytest.raises(ValueError, match="only one"):
        LowrankConfig(ratio=0.2, energy=0.9)
