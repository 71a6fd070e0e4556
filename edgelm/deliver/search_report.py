"""The search report: search.json (the source of truth), search.md and a self-contained search.html with the
Pareto plot (quality vs speed, marker area = size, the front joined, the chosen candidate ringed) and a table of
every trial with its parameters, objectives, feasibility and folder."""

from __future__ import annotations

import html
import json
from pathlib import Path

from edgelm.core.metrics import metric, with_unit
from edgelm.measure.bench_report import fmt, html_table, md_table, page


def axes(objectives: list[str]) -> tuple[int, int, int | None]:
    """(x, y, marker size) objective indices: speed on x, quality on y, size as marker area when optimised."""
    speed = next((i for i, n in enumerate(objectives) if n in ("speedup", "decode_tok_s", "p50_ms")), 1 % len(objectives))
    size = next((i for i, n in enumerate(objectives) if n == "size_mb" and i != speed), None)
    quality = next((i for i in range(len(objectives)) if i not in (speed, size)), 0)
    return speed, quality, size


def front_plot(result: dict) -> str | None:
    """SVG: every feasible completed trial, the front joined by a line, infeasible ones as grey crosses."""
    from edgelm.measure.plots import _plt, to_svg

    done = [r for r in result["trials"] if r["state"] == "COMPLETE" and r["values"]]
    if not done:
        return None
    names = result["objectives"]
    x, y, size = axes(names)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 4.4))
    biggest = max((r["values"][size] for r in done), default=1) if size is not None else 1
    area = lambda r: 40 + 360 * r["values"][size] / biggest if size is not None else 60  # noqa: E731
    _scatter(ax, [r for r in done if not r["feasible"]], x, y, area, color="#bbbbbb", marker="x", label="misses a gate")
    _scatter(ax, [r for r in done if r["feasible"] and not r["on_front"]], x, y, area, color="#1f77b4", label="feasible")
    front = sorted((r for r in done if r["on_front"]), key=lambda r: r["values"][x])
    _scatter(ax, front, x, y, area, color="#ff7f0e", label="Pareto front")
    ax.plot([r["values"][x] for r in front], [r["values"][y] for r in front], "--", color="black", lw=1)
    for r in done:
        ax.annotate(str(r["number"]), (r["values"][x], r["values"][y]), fontsize=7, xytext=(4, 3), textcoords="offset points")
    chosen = [r for r in done if r["chosen"]]
    _scatter(ax, chosen, x, y, lambda r: area(r) * 2.2, color="none", edgecolors="red", linewidths=2, label="chosen")
    ax.set_xlabel(metric(names[x]).title() + " (better: " + metric(names[x]).better + ")")
    ax.set_ylabel(metric(names[y]).title() + " (better: " + metric(names[y]).better + ")")
    ax.set_title("search: " + (f"marker area = {names[size]}" if size is not None else "trials"))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1), frameon=False)
    return to_svg(fig)


def _scatter(ax, rows, x, y, area, **style):
    if rows:
        ax.scatter([r["values"][x] for r in rows], [r["values"][y] for r in rows], s=[area(r) for r in rows],
                   alpha=0.85, **{"edgecolors": "black", "linewidths": 0.5, **style})


def trial_table(result: dict) -> tuple[list[str], list[list[str]]]:
    names = result["objectives"]
    header = ["trial", "state", "front", *[metric(n).title() for n in names], "gates", "s", "parameters"]
    rows = []
    for r in result["trials"]:
        values = [with_unit(n, v, fmt) for n, v in zip(names, r["values"])] if r["values"] else ["–"] * len(names)
        mark = " ".join(m for m, on in (("chosen", r["chosen"]), ("front", r["on_front"] and not r["chosen"]),
                                         ("as written", r.get("base_recipe"))) if on)
        gates = "pass" if r["feasible"] else ("error: " + r["error"][:120] if r.get("error")
                                              else "miss: " + "; ".join(r.get("misses") or ["a gate"])[:160])
        rows.append([str(r["number"]), r["state"].lower(), mark, *values, gates, fmt(r["seconds"]), _params(r)])
    return header, rows


def _params(row: dict) -> str:
    return ", ".join(f"{k}={json.dumps(v)}" for k, v in row["params"].items())


def summary_lines(result: dict) -> list[str]:
    done = [r for r in result["trials"] if r["state"] == "COMPLETE"]
    lines = [f"Study `{result['study']}` ({result['storage']}): {len(result['trials'])} trials, {len(done)} completed, "
             f"{result['distinct_candidates']} distinct candidates; objectives "
             + ", ".join(f"{n} ({d})" for n, d in zip(result["objectives"], result["directions"]))
             + f" on {result['runtime']}."]
    chosen = next((r for r in result["trials"] if r["chosen"]), None)
    if chosen is None:
        return lines + ["No trial passed the gates: nothing was published."]
    lines.append(f"Chosen: trial {chosen['number']} ({_figures(result, chosen)}), published as `{result['best']}` "
                 f"(re-run: `edgelm run {result['best']}/recipe.resolved.yaml`); parameters: {_params(chosen)}.")
    return lines + base_line(result, chosen)


def _figures(result: dict, row: dict) -> str:
    return ", ".join(f"{n} {with_unit(n, v, fmt)}" for n, v in zip(result["objectives"], row["values"]))


def base_line(result: dict, chosen: dict) -> list[str]:
    """How the choice compares with the recipe as written (the study's first trial), objective by objective."""
    base = next((r for r in result["trials"] if r.get("base_recipe") and r["values"]), None)
    if base is None:
        return []
    if base["number"] == chosen["number"]:
        return [f"The recipe as written (trial {base['number']}) is the choice: nothing on the front beats it on "
                f"{result['objectives'][result['prefer']]}."]
    ratios = ", ".join(f"{n} {with_unit(n, c, fmt)} vs {with_unit(n, b, fmt)}"
                       for n, c, b in zip(result["objectives"], chosen["values"], base["values"]))
    gates = "passes" if base["feasible"] else "misses"
    return [f"Against the recipe as written (trial {base['number']}, which {gates} the gates): {ratios}."]


def write_search_report(result: dict, out: Path) -> dict[str, Path]:
    out = Path(out)
    paths = {"json": out / "search.json", "md": out / "search.md", "html": out / "search.html"}
    paths["json"].write_text(json.dumps(result, indent=2, default=str))
    table = trial_table(result)
    paths["md"].write_text("\n".join(["# edgelm search", "", *summary_lines(result), "", *md_table(*table)]) + "\n")
    plot = front_plot(result) or "<p>No completed trial to plot.</p>"
    body = "".join(f"<p>{html.escape(line)}</p>" for line in summary_lines(result)) + plot + html_table(*table)
    paths["html"].write_text(page("edgelm search", body))
    return paths
