"""Surgery is exact: the cut model computes what the original computes with the removed units zeroed."""

import copy

import pytest
import torch

from edgelm.models.loading import load_bundle
from edgelm.core.errors import EdgelmError
from edgelm.models.anatomy import find_layers, weight_out_in
from edgelm.techniques.prune import coupling
from edgelm.techniques.prune.select import keep_counts, layers_to_drop, make_plan, round_keep
from edgelm.techniques.prune.surgery import Plan, apply_plan
from tests.techniques.prune.helpers import output, run, tiny
from tests.tiny import TINY_CONFIGS


def zeroed_original(model, layers, plan):
    masked = copy.deepcopy(model)
    with torch.no_grad():
        for layer in layers:
            att, mlp = layer.attention, layer.mlp
            if layer.index in plan.keep_groups:
                gone = [g for g in range(att.groups) if g not in plan.keep_groups[layer.index]]
                weight_out_in(masked.get_submodule(att.o))[:, coupling.o_columns(att, gone)] = 0
            if layer.index in plan.keep_neurons:
                gone = [j for j in range(mlp.neurons) if j not in plan.keep_neurons[layer.index]]
                weight_out_in(masked.get_submodule(mlp.down))[:, gone] = 0
    return masked


def plans(layers, uniform: bool) -> Plan:
    groups = layers[0].attention.groups
    neurons = layers[0].mlp.neurons
    if uniform:
        return Plan(keep_groups={l.index: [groups - 1] for l in layers},
                    keep_neurons={l.index: list(range(0, neurons, 2)) for l in layers})
    return Plan(keep_groups={0: [0]}, keep_neurons={0: list(range(8)), 1: list(range(1, neurons, 3))})


@pytest.mark.parametrize("uniform", [True, False], ids=["uniform", "per-layer"])
@pytest.mark.parametrize("arch", sorted(TINY_CONFIGS))
def test_cut_model_equals_original_with_units_zeroed(arch, uniform, tiny_model):
    model = tiny(tiny_model, arch).model
    layers = find_layers(model)
    plan = plans(layers, uniform)
    expected = output(zeroed_original(model, layers, plan))
    pruned, ops = apply_plan(model, layers, plan)
    if arch == "phi3" and not uniform:  # its fused-QKV split reads the head count from the shared config
        with pytest.raises(RuntimeError):
            output(pruned)
        return
    torch.testing.assert_close(output(pruned), expected, rtol=1e-4, atol=1e-5)
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())
    if uniform and arch in ("llama", "qwen2", "qwen3", "mistral", "gemma2", "phi3"):
        assert ops == []  # head_dim is a config field: the plain HF config describes the pruned model


def test_inexact_surgery_is_refused(tiny_model):
    from edgelm.techniques.prune.calibrate import calibration_batches
    from edgelm.techniques.prune.stage import check_exact

    bundle = tiny(tiny_model, "phi3")
    layers = find_layers(bundle.model)
    plan = plans(layers, uniform=False)
    pruned, _ = apply_plan(bundle.model, layers, plan)
    batch = calibration_batches(bundle, n_samples=1, seq_len=8)[0]
    with pytest.raises(EdgelmError, match="not exact"):
        check_exact(bundle.model, pruned, layers, plan, batch)


def test_uniform_pruning_saves_a_plain_hf_config(tiny_model, tmp_path):
    from transformers import AutoModelForCausalLM

    bundle = tiny(tiny_model, "llama")
    result = run("prune", bundle, tmp_path / "w", heads=0.5, ffn=0.5, round_to=8, calib_samples=2, calib_seq_len=16)
    assert "structure" not in result.bundle.extra
    result.bundle.save(tmp_path / "out")
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    assert plain.config.intermediate_size == 32 and plain.config.num_key_value_heads == 1
    torch.testing.assert_close(output(plain), output(result.bundle.model))


@pytest.mark.parametrize("arch", ["gemma2", "bert", "gpt_neox"])
def test_dropped_layers_reload(arch, tiny_model, tmp_path):
    bundle = tiny(tiny_model, arch)
    result = run("prune", bundle, tmp_path / "w", drop_layers=1, calib_samples=2, calib_seq_len=16)
    cfg = result.bundle.model.config
    assert cfg.num_hidden_layers == 1
    if isinstance(getattr(cfg, "layer_types", None), list):
        assert len(cfg.layer_types) == 1
    result.bundle.save(tmp_path / "out")
    reloaded = load_bundle(tmp_path / "out")
    torch.testing.assert_close(output(reloaded.model), output(result.bundle.model))


def test_round_keep_multiples_and_bounds():
    assert round_keep(1536, 0.25, 8) == 1152
    assert round_keep(100, 0.5, 8) == 48
    assert round_keep(64, 0.99, 8) == 8  # never below one multiple
    assert round_keep(4, 0.9, 8) == 1  # smaller than the multiple: plain rounding, at least one


def test_global_scope_takes_more_from_unimportant_layers():
    scores = {0: [1.0, 1.0, 1.0, 1.0], 1: [4.0, 0.1, 0.1, 4.0]}
    counts = keep_counts(scores, 0.25, "global", 1)
    assert counts == {0: 4, 1: 2}
    assert keep_counts(scores, 0.25, "uniform", 1) == {0: 3, 1: 3}
    plan = make_plan({}, scores, heads=None, ffn=0.25, scope="global", multiple=1, drop=[])
    assert plan.keep_neurons == {1: [0, 3]}


def test_layers_to_drop_picks_lowest_influence():
    assert layers_to_drop([0.5, 0.01, 0.3, 0.02], 2) == [1, 3]
    with pytest.raises(EdgelmError, match="keep at least one"):
        layers_to_drop([0.1, 0.2], 2)


def test_head_count_the_config_rejects_is_recorded_as_ops(tiny_model, tmp_path):
    """4 -> 3 heads on a 32-wide BERT: BertConfig refuses hidden 32 with 3 heads, so the shapes go to ops."""
    bundle = tiny(tiny_model, "bert", "sequence-classification")
    result = run("prune", bundle, tmp_path / "w", heads=0.25, calib_samples=2, calib_seq_len=16)
    assert result.bundle.extra["structure"]
    result.bundle.save(tmp_path / "out")
    reloaded = load_bundle(tmp_path / "out")
    assert reloaded.model.bert.encoder.layer[0].attention.self.query.out_features == 24
    torch.testing.assert_close(output(reloaded.model), output(result.bundle.model))
