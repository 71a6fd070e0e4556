"""The shared stage tester: every case in cases.py runs through the real pipeline code path (run_one) and must
honour the Stage contract: new bundle, input untouched, history recorded, saves and reloads, JSON metrics whose
keys are all in the metric vocabulary."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from edgelm.core.metrics import reported_keys, undeclared
from edgelm.data.readers import DataConfig
from edgelm.models.loading import load_bundle, load_model
from edgelm.pipeline.run import run_one
from edgelm.core.stage import StageContext, all_stages, get_stage
from tests.stages.cases import CASES

LABELLED = "\n".join(["label\tsentence"] + [f"{i % 2}\t{'a great fun movie' if i % 2 else 'a boring bad film'} {i % 7}"
                                            for i in range(40)]) + "\n"
TEXT = "\n".join("the movie was good and the acting was great . it is a story of love ." for _ in range(40)) + "\n"


def weights_digest(model) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def make_data(tmp_path, kind):
    if kind is None:
        return None
    path = tmp_path / ("data.tsv" if kind == "labelled" else "data.txt")
    path.write_text(LABELLED if kind == "labelled" else TEXT)
    return DataConfig(path=str(path))


def case_id(case):
    kind, arch, task, config, _ = case
    return f"{kind}-{arch}-{task}-" + "-".join(f"{k}={v}" for k, v in config.items())


@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_stage_contract(case, tiny_model, tmp_path):
    kind, arch, task, config, data_kind = case
    stage = get_stage(kind)
    bundle = load_model(str(tiny_model(arch, task)), task=task)
    before = weights_digest(bundle.model)
    ctx = StageContext(workdir=tmp_path / ".01-stage.tmp", data=make_data(tmp_path, data_kind), seed=0,
                       run_dir=tmp_path, initial_bundle=lambda: bundle)
    record, out = run_one(kind, stage.Config.model_validate(config), bundle, ctx, tmp_path / "01-stage", "h")
    assert out is not bundle
    assert weights_digest(bundle.model) == before, "stage mutated its input model"
    assert out.history[-1]["kind"] == kind and bundle.history == []
    json.dumps(record.metrics)  # metrics must be JSON-serialisable
    missing = undeclared(reported_keys(record.metrics))
    assert not missing, f"metric keys missing from the vocabulary (edgelm/core/metrics.py): {missing}"
    reloaded = load_bundle(tmp_path / "01-stage")
    assert reloaded.task == out.task and reloaded.history == out.history
    assert set(reloaded.artifacts) == set(out.artifacts) and all(p.exists() for p in reloaded.artifacts.values())
    if out.model is not None and reloaded.model is not None:
        ids = torch.tensor([[2, 5, 6, 7, 3]])
        torch.testing.assert_close(first_output(out.model, ids), first_output(reloaded.model, ids), rtol=1e-4, atol=1e-5)


def first_output(model, ids):
    with torch.no_grad():
        out = model(input_ids=ids)
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


def test_every_stage_has_a_case():
    covered = {c[0] for c in CASES}
    missing = [k for k in all_stages() if k not in covered]
    assert not missing, f"stages without a shared-tester case in tests/stages/cases.py: {missing}"
