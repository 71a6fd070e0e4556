"""Test-only stages and an `edgelm` entry point that registers them, for the reliability suites.

The stages are NOT registered on import (the shared stage tester would then demand cases for them): call
`register()` / `unregister()`, or run `python -m tests.reliability.plugin ARGS...`, which registers them, adds a
`rel-noise` CLI command and runs the real `edgelm` CLI. With REL_SIGNAL_DIR set, the subprocess drops a file
into that folder at each kill point (only at REL_STOP_AT when that is set) and then sleeps REL_PAUSE seconds, so a test can SIGKILL it exactly
at that point:

  <NN-kind>.file<i>      the stage has written i+1 of its files into its temp folder (mid-stage)
  <NN-kind>.weights      bundle.save wrote the weights but not yet the tokenizer / edgelm.json
  <NN-kind>.unpublished  the temp folder is complete (metrics.json written) but not yet renamed
  run.json               every stage is published; run.json is about to be written
"""

from __future__ import annotations

import copy
import os
import sys
import time
from pathlib import Path

from pydantic import Field

from edgelm.core.stage import REGISTRY, Stage, StageConfig, StageResult

NOISE_KIND = "rel-noise"


class NoiseConfig(StageConfig):
    scale: float = Field(0.01, ge=0, description="std of the seeded Gaussian noise added to every weight")
    files: int = Field(2, ge=0, le=20, description="extra files written one by one into the stage folder")
    sleep: float = Field(0.0, ge=0, description="seconds to sleep after each extra file")


class NoiseStage(Stage):
    """Adds seeded noise (torch RNG seeded by the pipeline) so resumed and repeated runs can be compared."""

    kind = NOISE_KIND
    Config = NoiseConfig
    summary = "test-only: seeded weight noise, slow file writes"

    def run(self, bundle, config, ctx):
        import torch

        model = copy.deepcopy(bundle.model)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * config.scale)
        for i in range(config.files):
            (ctx.workdir / f"part-{i}.bin").write_bytes(os.urandom(4096))
            signal(f"{stage_name(ctx.workdir)}.file{i}")
            time.sleep(config.sleep)
        norm = float(sum(float(p.detach().norm()) for p in model.parameters()))
        return StageResult(bundle.with_model(model), {"weight_norm": norm, "size_mb": 0.1},
                           [ctx.workdir / f"part-{i}.bin" for i in range(config.files)])


def stage_name(folder: Path) -> str:
    """`.02-rel-noise.tmp` -> `02-rel-noise`."""
    return Path(folder).name.strip(".").removesuffix(".tmp")


def signal(point: str) -> None:
    """Announce a kill point and wait there (only in a subprocess started with REL_SIGNAL_DIR)."""
    folder = os.environ.get("REL_SIGNAL_DIR")
    if not folder or os.environ.get("REL_STOP_AT") not in (None, point):
        return
    (Path(folder) / point).write_text(str(os.getpid()))
    deadline = time.monotonic() + float(os.environ.get("REL_PAUSE", "30"))
    while time.monotonic() < deadline:  # short sleeps: a signal caught by another thread is acted on promptly
        time.sleep(0.05)


def register() -> None:
    """Register the stage, and its command when the CLI (which adds stage commands at import) is loaded already."""
    REGISTRY.setdefault(NOISE_KIND, NoiseStage)
    cli = sys.modules.get("edgelm.cli")
    if cli is not None and NOISE_KIND not in cli.main.commands:
        cli.add_stage_command(NOISE_KIND)


def unregister() -> None:
    if REGISTRY.get(NOISE_KIND) is NoiseStage:
        del REGISTRY[NOISE_KIND]
    cli = sys.modules.get("edgelm.cli")
    if cli is not None:
        cli.main.commands.pop(NOISE_KIND, None)


def _install_kill_points() -> None:
    """Wrap the pipeline's save / publish / run.json steps so each announces itself before it completes."""
    import edgelm.models.bundle as bundle_mod
    import edgelm.pipeline.run as pipeline
    import edgelm.pipeline.runner as runner

    save_model, publish, write_run_json = bundle_mod.save_model, pipeline.publish, runner.write_run_json

    def paused_save_model(model, tokenizer, directory):
        model.save_pretrained(directory, safe_serialization=True)
        signal(f"{stage_name(directory)}.weights")
        save_model(model, tokenizer, directory)

    def paused_publish(tmp, final):
        signal(f"{final.name}.unpublished")
        publish(tmp, final)

    def paused_write_run_json(out, *args, **kwargs):
        signal("run.json")
        return write_run_json(out, *args, **kwargs)

    bundle_mod.save_model = paused_save_model
    pipeline.publish = paused_publish
    runner.write_run_json = paused_write_run_json


def main() -> None:
    register()
    _install_kill_points()
    from edgelm.cli import add_stage_command, main as cli_main

    add_stage_command(NOISE_KIND)
    sys.argv[0] = "edgelm"
    cli_main()


if __name__ == "__main__":
    main()
