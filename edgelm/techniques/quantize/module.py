"""Quantizing a plain nn.Module's ONNX export: the same quantizers, manifest and parity gate as text models, fed
with the example inputs saved beside the export (and their longer variant when it has dynamic axes) instead of
tokenized text. Sensitivity ranking and `auto` need labelled text, so they stay with text models."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from edgelm.core.errors import EdgelmError
from edgelm.core.ui import step
from edgelm.models.plain import EXAMPLE_INPUTS_FILE, load_example_inputs
from edgelm.techniques.quantize import workflow
from edgelm.verify import fidelity


def quantize_module_bundle(bundle, source: Path, config, ctx):
    """Quantize `source` (a module's float model.onnx) into ctx.workdir; returns (bundle, metrics, files)."""
    refuse_text_options(config)
    dst = Path(ctx.workdir) / "model.onnx"
    feeds = module_feeds(bundle, source.parent)
    options = workflow.options_from(config)
    with step(f"quantize: {config.method}"):
        info = workflow.quantize_onnx(source, dst, options, FeedsReader(feeds) if workflow.needs_calibration(options) else None)
    with step("quantize: parity against the float graph and the module"):
        metrics = {"parity": feeds_parity(source, dst, feeds, config), "quantization": info,
                   "parity_torch": workflow.torch_parity(bundle, dst, config.method)}
    shutil.copy2(source.parent / EXAMPLE_INPUTS_FILE, dst.parent / EXAMPLE_INPUTS_FILE)
    artifacts, files = workflow.publish_folder(bundle, source, dst, config, metrics)
    metrics.update(workflow.size_figures(artifacts, {**bundle.artifacts, "onnx": source}))
    workflow._enforce(metrics, config)
    return bundle.derive(artifacts=artifacts), metrics, files + [dst.parent / EXAMPLE_INPUTS_FILE]


def refuse_text_options(config) -> None:
    if config.sensitivity or config.auto:
        raise EdgelmError("quantize sensitivity/auto: rank layers on labelled text, so they need a Hugging Face "
                          "text model; on a plain torch.nn.Module list float layers with exclude=[...]")
    if config.pte:
        raise EdgelmError("quantize pte: the ExecuTorch path needs a Hugging Face model; a plain torch.nn.Module "
                          "quantizes its ONNX export")


def module_feeds(bundle, folder: Path) -> list[dict]:
    """The saved example inputs and, in memory, their longer variant (dynamic dims exercised)."""
    from edgelm.models.plain import varied_inputs

    feeds = [load_example_inputs(folder)]
    varied = varied_inputs(bundle.module) if bundle.module is not None else None
    if varied is not None:
        feeds.append({n: t.detach().numpy() for n, t in zip(bundle.module.input_names, varied)})
    return feeds


def feeds_parity(source: Path, dst: Path, feeds: list[dict], config) -> dict:
    reference, quantized = graph_outputs(source, feeds), graph_outputs(dst, feeds)
    figures = fidelity.compare("feature-extraction", reference, quantized)
    verdict = fidelity.check(figures, config.method, workflow.parse_tolerances(config.tolerance))
    return {"samples": len(feeds), "figures": figures, "checks": verdict.checks, "ok": verdict.ok}


def graph_outputs(path: Path, feeds: list[dict]) -> fidelity.Outputs:
    """Every output of the graph on every feed, as fidelity.Outputs (one entry per output and feed)."""
    from edgelm.verify.feeds import make_session

    session = make_session(path)
    values = [np.asarray(v, dtype=np.float32) for f in feeds for v in session.run(None, f)]
    return fidelity.Outputs(values, [], [])


class FeedsReader:
    """onnxruntime's CalibrationDataReader over the example feeds (int8-static on a module)."""

    def __init__(self, feeds: list[dict]):
        self.feeds = iter(feeds)

    def get_next(self):
        return next(self.feeds, None)

    def rewind(self):
        pass
