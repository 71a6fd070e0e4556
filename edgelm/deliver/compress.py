"""`edgelm compress` end to end: the pipeline's recipe for the model and target (edgelm.pipeline.compress), run
with `edgelm.pipeline.runner.run_recipe` (the same code path as `edgelm run`, report included), then the app
bundle `OUT/bundle/` from the run — also when a gate fails, so the miss can be inspected.
"""

from __future__ import annotations

from pathlib import Path

from edgelm.core.errors import GateFailed
from edgelm.core.records import RunRecord


def compress(model: str | None, out: Path, **kwargs) -> dict:
    """Run the recipe into OUT and write OUT/bundle; returns where things are plus the headline figures."""
    from edgelm.deliver.app_bundle import write_bundle
    from edgelm.deliver.report import render_run
    from edgelm.pipeline.compress import build_recipe, headline
    from edgelm.pipeline.runner import run_recipe

    recipe = build_recipe(model, **kwargs)
    out = Path(out)
    failed = None
    try:
        run_recipe(recipe, out, on_written=render_run)
    except GateFailed as exc:  # the bundle is still written, so the miss can be inspected; the exit code says 3
        failed = exc
    run = RunRecord.load(out)
    bundle = write_bundle(out)
    result = {"out": str(out), "recipe": recipe.name, "bundle": str(bundle),
              "report": {kind: str(out / f"report.{kind}") for kind in ("html", "md", "json")
                         if (out / f"report.{kind}").is_file()} or {"json": str(out / "run.json")},
              "headline": headline(run), "gates": [g.model_dump() for g in run.gates]}
    if failed is not None:
        failed.result = result
        raise failed
    return result
