"""Reports are renderings of a run's JSON (run.json is the source of truth): Markdown now, HTML with plots
when the bench/report issue lands."""

from __future__ import annotations

import json
from pathlib import Path

from edgelm.errors import EdgelmError


def render_run(run_dir: str | Path) -> list[Path]:
    run_dir = Path(run_dir)
    try:
        run = json.loads((run_dir / "run.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise EdgelmError(f"{run_dir}/run.json: cannot read it ({exc}); is this an edgelm run folder?") from None
    md = run_dir / "report.md"
    md.write_text(markdown(run))
    return [md]


def markdown(run: dict) -> str:
    lines = [f"# edgelm run report{(': ' + run['recipe']) if run.get('recipe') else ''}", "",
             f"Input model: `{run['input'].get('model')}` · seed {run['seed']} · total {run['total_seconds']:.1f} s", "",
             "| stage | status | seconds | metrics |", "|---|---|---:|---|"]
    for st in run["stages"]:
        shown = ", ".join(f"{k}={v}" for k, v in st["metrics"].items() if isinstance(v, (int, float, str)))[:200]
        lines.append(f"| {st['name']} | {st['status']} | {st['seconds']:.1f} | {shown} |")
    if run.get("gates"):
        lines += ["", "| gate | target | measured | ok |", "|---|---|---|---|"]
        lines += [f"| {g['gate']} | {g['target']} | {g['measured']} | {'✅' if g['ok'] else '❌'} |" for g in run["gates"]]
    env = run["environment"]
    lines += ["", f"Python {env['python']} on {env['platform']}, {env['cpu_count']} CPUs; "
              + ", ".join(f"{k} {v}" for k, v in env["versions"].items())]
    return "\n".join(lines) + "\n"
