"""Shared helpers for structural-compression tests: run a stage on a tiny model, compare outputs."""

from __future__ import annotations

from pathlib import Path

import torch

from edgelm.models.loading import load_model
from edgelm.core.stage import StageContext, get_stage

IDS = torch.tensor([[2, 5, 6, 7, 8, 9, 10, 3], [2, 11, 12, 13, 14, 15, 16, 3]])


def run(kind: str, bundle, workdir: Path, data=None, initial=None, **config):
    """Run a stage outside the pipeline; `initial` is the run's input model (default: `bundle`)."""
    stage = get_stage(kind)
    workdir.mkdir(parents=True, exist_ok=True)
    ctx = StageContext(workdir=workdir, data=data, initial_bundle=lambda: initial or bundle)
    return stage().run(bundle, stage.Config(**config), ctx)


def output(model, ids=IDS):
    with torch.no_grad():
        out = model(input_ids=ids)
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


def tiny(tiny_model, arch, task=None):
    return load_model(str(tiny_model(arch, task)), task=task)
