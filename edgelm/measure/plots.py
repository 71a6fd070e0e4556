"""Plots for bench reports, as inline SVG text (fonts drawn as paths) so the HTML needs no network or files."""

from __future__ import annotations

import io

from edgelm.core.metrics import metric

COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.fonttype": "path", "font.size": 9, "axes.spines.top": False, "axes.spines.right": False})
    return plt


def to_svg(fig) -> str:
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight")
    _plt().close(fig)
    text = buffer.getvalue()
    return text[text.index("<svg"):]


def row_label(row: dict) -> str:
    threads = f" ×{row['threads']}t" if row.get("threads") else ""
    return f"{row['artifact']} · {row['runtime']}{threads}"


def latency_distribution(rows: list[dict], title: str) -> str | None:
    """Box plot (with every run as a dot) of per-call latency for each artifact/runtime/threads row."""
    rows = [r for r in rows if r.get("times_ms")]
    if not rows:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.2))
    data = [r["times_ms"] for r in rows]
    boxes = ax.boxplot(data, vert=False, showfliers=False, widths=0.6, patch_artist=True, medianprops={"color": "black"})
    for i, (box, times) in enumerate(zip(boxes["boxes"], data)):
        box.set(facecolor=COLORS[i % len(COLORS)], alpha=0.35)
        jitter = [(i + 1) + 0.5 * ((k * 0.618) % 1 - 0.5) for k in range(len(times))]
        ax.scatter(times, jitter, s=7, alpha=0.5, color=COLORS[i % len(COLORS)], linewidths=0, zorder=3)
    ax.set_yticks(range(1, len(rows) + 1), [row_label(r) for r in rows])
    ax.set_xscale("log" if max(max(d) for d in data) / max(min(min(d) for d in data), 1e-6) > 30 else "linear")
    ax.set_xlabel("latency per call (ms)" + (" — decode step" if rows[0].get("inputs") == "decode" else ""))
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    return to_svg(fig)


def pareto_front(points: list[tuple[float, float]], maximize_y: bool) -> list[int]:
    """Indices of points no other point beats on both axes (lower x; higher y if maximize_y else lower y), by x."""
    from edgelm.measure.pareto import pareto_front as non_dominated

    front = non_dominated(dict(enumerate(points)), ["minimize", "maximize" if maximize_y else "minimize"])
    return sorted(front, key=lambda i: points[i][0])


def tradeoff(rows: list[dict], title: str) -> str | None:
    """Latency vs accuracy (marker area = size) when accuracy is known, else latency vs size; Pareto front drawn."""
    rows = [{**r, "name": row_label(r)} for r in rows if r.get("p50_ms") and r.get("size_mb")]
    if not rows:
        return None
    with_acc = all(r.get("accuracy") is not None for r in rows)
    return pareto_plot(rows, title, y="accuracy" if with_acc else "size_mb", size="size_mb" if with_acc else None)


def pareto_plot(points: list[dict], title: str, x: str = "p50_ms", y: str = "accuracy", size: str | None = "size_mb",
                label: str = "name") -> str | None:
    """Candidates as `x` (default latency) against `y` (default accuracy), marker area = `size`, with the Pareto
    front: axis titles, units and which direction is better come from the metric vocabulary (edgelm.core.metrics).
    `points` are dicts holding those keys (a bench row, a search trial, a run's stage); None when none has x and y."""
    points = [p for p in points if p.get(x) is not None and p.get(y) is not None]
    if not points:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    biggest = max((p.get(size) or 0 for p in points), default=0) if size else 0
    for i, p in enumerate(points):
        area = 40 + 400 * (p.get(size) or 0) / biggest if biggest else 50
        ax.scatter([p[x]], [p[y]], s=area, color=COLORS[i % len(COLORS)], alpha=0.8, label=str(p.get(label, i)),
                   edgecolors="black", linewidths=0.5)
    xy = [(p[x], p[y]) for p in points]
    front = front_of(points, x, y)
    ax.plot([xy[i][0] for i in front], [xy[i][1] for i in front], "--", color="black", lw=1, label="Pareto front")
    ax.set_xlabel(_axis_title(x))
    ax.set_ylabel(_axis_title(y) + (f" (marker area = {_axis_title(size)})" if biggest else ""))
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1), frameon=False, markerscale=0.6)
    return to_svg(fig)


def front_of(points: list[dict], x: str, y: str) -> list[int]:
    """Indices of the Pareto front, lower `x` better; `y`'s better direction from the vocabulary."""
    maximize = metric(y) is not None and metric(y).better == "higher"
    return pareto_front([(p[x], p[y]) for p in points], maximize_y=maximize)


def _axis_title(key: str) -> str:
    entry = metric(key)
    return entry.title() if entry else key


def confusion_matrix(labels: list[str], counts: list[list[int]], title: str) -> str:
    """Heat map of [true, predicted] counts, shaded by the share of each true label (row), counts written in."""
    import numpy as np

    plt = _plt()
    matrix = np.asarray(counts, dtype=np.float64)
    shares = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    side = 1.2 + 0.55 * len(labels)
    fig, ax = plt.subplots(figsize=(side + 1.0, side))
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(j, i, f"{int(count)}", ha="center", va="center", color="white" if shares[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted label")
    ax.set_ylabel("true label")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true label")
    return to_svg(fig)
