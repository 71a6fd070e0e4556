"""finetune --method adapter: only the adapters (and the new head) train, their count follows 2·h·b + b + h per
adapter, the base stays frozen, the adapted model reloads from its structure ops, exports with parity, int8."""

from __future__ import annotations

import json

import pytest
import torch

from edgelm.models.loading import load_bundle, load_model
from edgelm.models.structure import Adapted
from edgelm.pipeline.recipe import parse_recipe
from edgelm.pipeline.runner import run_recipe
from edgelm.techniques.finetune.adapters import adapter_param_count
from tests.stages.test_all_stages import LABELLED
from tests.stages.test_finetune import finetune
from tests.techniques.prune.helpers import IDS

HIDDEN, BLOCKS = 32, 2  # tests/tiny.py encoder proportions


def head_params(model) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if n.startswith(("classifier.", "bert.pooler.")))


NORM_PARAMS = BLOCKS * 2 * 2 * HIDDEN  # two LayerNorms per BERT block, weight and bias each


@pytest.mark.parametrize("placement, per_block, train_norms", [("both", 2, True), ("ffn", 1, False)])
def test_only_adapters_and_head_train_and_the_count_follows_the_formula(placement, per_block, train_norms,
                                                                        tiny_model, tmp_path):
    source = load_model(str(tiny_model("bert")))
    metrics, out = finetune(tiny_model("bert"), tmp_path, {"method": "adapter", "adapter_reduction": 8,
                                                            "adapter_placement": placement, "epochs": 2,
                                                            "adapter_train_norms": train_norms,
                                                            "learning_rate": 1e-2, "batch_size": 8}, LABELLED)
    ops = out.extra["structure"]
    assert len(ops) == per_block * BLOCKS and {op["bottleneck"] for op in ops} == {HIDDEN // 8}
    assert adapter_param_count(ops) == per_block * BLOCKS * (2 * HIDDEN * 4 + 4 + HIDDEN)
    assert metrics["trainable_params"] == (adapter_param_count(ops) + head_params(out.model)
                                           + (NORM_PARAMS if train_norms else 0))
    base = {f"bert.{k}": v for k, v in source.model.state_dict().items() if not k.startswith("pooler.")}
    tuned = {k.replace(".base.", "."): v for k, v in out.model.state_dict().items()}
    changed = {k for k, v in base.items() if not torch.equal(tuned[k], v)}
    in_blocks = {k for k in base if k.startswith("bert.encoder.layer.") and "LayerNorm" in k}
    assert changed == (in_blocks if train_norms else set()), "only the blocks' LayerNorms may train besides adapters"
    ups = [m.adapter.up.weight for m in out.model.modules() if isinstance(m, Adapted)]
    assert len(ups) == len(ops) and all(float(u.abs().sum()) > 0 for u in ups), "adapters start at zero and train"
    assert metrics["export_max_abs_diff"] < 1e-5
    reloaded = load_bundle(tmp_path / "run").model
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=IDS).logits, out.model(input_ids=IDS).logits)


@pytest.mark.slow  # one torch.export of the adapted graph: ~30 s on a loaded 2-core machine
def test_adapted_graph_exports_with_parity_and_quantizes_int8(tiny_model, tmp_path):
    data = tmp_path / "d.tsv"
    data.write_text(LABELLED)
    recipe = parse_recipe({"model": str(tiny_model("bert")), "data": str(data), "stages": [
        {"kind": "finetune", "method": "adapter", "adapter_reduction": 8, "batch_size": 8},
        {"kind": "export", "formats": ["onnx"]}, {"kind": "quantize", "method": "int8-dynamic"}]})
    run_recipe(recipe, tmp_path / "run")
    export = json.loads((tmp_path / "run" / "02-export" / "metrics.json").read_text())["metrics"]
    assert export["parity"]["onnx"]["max_abs_diff"] <= 1e-4
    quantized = json.loads((tmp_path / "run" / "03-quantize" / "metrics.json").read_text())["metrics"]
    assert quantized["parity"]["ok"] and quantized["quantization"]["op_counts"]["MatMulInteger"] >= 4 * 2 * BLOCKS
    assert quantized["size_mb"] < quantized["size_mb_float"]
