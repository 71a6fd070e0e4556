"""Console output: rich progress on stderr, so stdout stays clean for --json.

Three levels, kept in the environment so bench/eval worker processes inherit them: quiet (EDGELM_QUIET: errors and
the final result lines only), normal (one line per stage start/finish with the figure that matters; progress bars in
a terminal) and verbose (EDGELM_VERBOSE: third-party log lines, warnings and prints let through as well).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from edgelm.core.metrics import SHOWN, metric

console = Console(stderr=True, highlight=False, soft_wrap=True)

NOISY_LOGGERS = ("torchao", "torch.utils._pytree", "torch._dynamo", "torch.onnx", "onnxscript", "transformers",
                 "ort_format_model", "onnxruntime", "optimum", "accelerate", "datasets", "peft", "urllib3", "httpx")


def _quiet() -> bool:
    return bool(os.environ.get("EDGELM_QUIET"))


def verbose() -> bool:
    return bool(os.environ.get("EDGELM_VERBOSE")) and not _quiet()


def set_verbosity(level: str) -> None:
    """`quiet`, `normal` or `verbose` for this process and the workers it starts."""
    os.environ.pop("EDGELM_QUIET", None)
    os.environ.pop("EDGELM_VERBOSE", None)
    if level in ("quiet", "verbose"):
        os.environ[f"EDGELM_{level.upper()}"] = "1"
    quiet_libraries()


def progress() -> Progress:
    """A progress display; off when quiet and when stderr is no terminal (a stopped display would print a blank line)."""
    return Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TextColumn("{task.fields[status]}"), console=console,
                    disable=_quiet() or not console.is_terminal)


def track(iterable, description: str, total: int | None = None):
    """Iterate with a progress bar (the one helper long loops use)."""
    total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
    with progress() as bar:
        task = bar.add_task(description, total=total, status="")
        for item in iterable:
            yield item
            bar.advance(task)


@contextlib.contextmanager
def step(description: str):
    """A spinner for one long call that has no natural progress count (export, conversion)."""
    with progress() as bar:
        task = bar.add_task(description, total=None, status="")
        yield lambda status: bar.update(task, status=status)


def info(message: str) -> None:
    if not _quiet():
        console.print(message)


# --- stage lines ------------------------------------------------------------------------------------------
STAGE_FIGURES = ("size_mb", "compression", "param_reduction", "accuracy", "accuracy_drop_pt", "perplexity",
                 "perplexity_ratio", "fidelity_cosine_mean", "icl_accuracy", "speedup", "p50_ms")
PHRASES = {"compression": "{}× smaller", "speedup": "{}× faster", "perplexity_ratio": "ppl ×{}"}
BARE = ("size_mb", "p50_ms")  # figures that read without a name
MAX_FIGURES = 3
LINE_WIDTH = 100


def stage_started(name: str) -> None:
    info(f"[bold]▶ {name}[/bold]")


def stage_finished(name: str, metrics: dict, seconds: float, resumed: bool = False) -> None:
    """`✓ 02-quantize  int8  22.9 MB  3.9× smaller  12.3 s`: the setting and the figures that matter."""
    figures = stage_figures(metrics)
    tail = "(finished earlier, resumed)" if resumed else f"{seconds:.1f} s"
    while True:  # as many figures as fit in LINE_WIDTH columns
        parts = [p for p in (stage_setting(metrics), *figures) if p]
        if len(f"✓ {name:<13} " + "  ".join([*parts, tail])) <= LINE_WIDTH or len(figures) <= 1:
            break
        figures = figures[:-1]
    info(f"[green]✓[/green] {name:<13} " + "  ".join([*parts, f"[dim]{tail}[/dim]"]))


def stage_setting(metrics: dict) -> str:
    """What the stage did, in a word: quantization method, training method, formats or runtime."""
    quant = metrics.get("quantization")
    if isinstance(quant, dict) and quant.get("method"):
        return str(quant["method"])
    if metrics.get("student") and metrics.get("teacher"):  # distill into a new architecture (a BiLSTM)
        return f"{metrics['student']} student from {metrics['teacher']}"
    for key, words in (("method", ""), ("formats", ""), ("runtime", ""), ("importance", "by "), ("teacher", "from "),
                         ("baseline", "vs ")):
        value = metrics.get(key)
        if value:
            return words + ("+".join(map(str, value)) if isinstance(value, list) else str(value))
    return ""


def stage_figures(metrics: dict) -> list[str]:
    """The preferred figures it has; a stage with fewer than two adds other declared figures with a better
    direction (a new metric shows up without code here), MAX_FIGURES in all."""
    keys = [k for k in STAGE_FIGURES if is_figure(k, metrics.get(k))]
    if len(keys) < 2:
        keys += [k for k, v in metrics.items() if k not in STAGE_FIGURES and is_figure(k, v)]
    return [figure_text(k, metrics[k]) for k in keys[:MAX_FIGURES]]


def is_figure(key: str, value) -> bool:
    entry = metric(key)
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    per_runtime = key in STAGE_FIGURES and isinstance(value, dict) and value and all(
        isinstance(v, (int, float)) for v in value.values())
    return bool(entry and entry.better and (numeric or per_runtime) and not key.startswith(("reference_", "teacher_")))


def figure_text(key: str, value) -> str:
    """One figure with its unit (`22.9 MB`, `3.95× smaller`, `accuracy 96.0 pt`); a {runtime: value} map shows
    its best entry."""
    entry = metric(key)
    if isinstance(value, dict):
        best = (max if entry.better == "higher" else min)(value, key=value.get)
        return f"{figure_text(key, value[best])} ({best})"
    if key == "accuracy_drop_pt":
        return f"Δacc {number(0.0 - value, 'pt', signed=True)} pt"
    if key == "param_reduction":
        return f"{value * 100:.0f}% fewer params"
    if key in PHRASES:
        return PHRASES[key].format(number(value, entry.unit))
    shown = number(value, entry.unit) + SHOWN.get(entry.unit, "")
    return shown if key in BARE else f"{label(key)} {shown}"


def label(key: str) -> str:
    """A metric's short name without its unit (`p50`, `fidelity cosine mean`)."""
    entry = metric(key)
    return entry.title().removesuffix(SHOWN.get(entry.unit, "")).strip() if entry else key.replace("_", " ")


def number(value, unit: str | None = None, signed: bool = False) -> str:
    """A figure rounded for reading by its unit: pt and MB one decimal, factors two, ratios four significant."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    sign = "+" if signed and value > 0 else ""
    value = abs(value) if value == 0 else value  # no "-0.0"
    if isinstance(value, int):
        return sign + (f"{value:,}" if abs(value) >= 10000 else str(value))
    decimals = {"pt": 1, "MB": 1 if abs(value) >= 1 else 3, "x": 2, "s": 1}.get(unit or "")
    if decimals is None:
        magnitude = abs(value)
        decimals = 4 if magnitude < 1 else 3 if magnitude < 10 else 1 if magnitude < 1000 else 0
    return sign + f"{value:.{decimals}f}"


# --- third-party output -----------------------------------------------------------------------------------
class _EdgelmOnly(logging.Filter):
    """Outside --verbose, log records of other libraries pass only at ERROR and above."""

    def filter(self, record: logging.LogRecord) -> bool:
        return verbose() or record.name.startswith("edgelm") or record.levelno >= logging.ERROR


def quiet_libraries() -> None:
    """Third-party chatter (converter INFO lines, export warnings, transformers advice) is noise for CLI users;
    --verbose lets it through. A root handler with a filter catches libraries that set their own logger levels."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if verbose():
        for name in NOISY_LOGGERS:
            logging.getLogger(name).setLevel(logging.NOTSET)
        logging.getLogger().setLevel(logging.INFO)
        warnings.resetwarnings()
        return
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")  # plain tqdm bars (transformers' GGUF reader); read when tqdm is imported
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    _install_root_filter()
    warnings.filterwarnings("ignore")
    _silence_transformers()


def _install_root_filter() -> None:
    root = logging.getLogger()
    if not any(isinstance(f, _EdgelmOnly) for h in root.handlers for f in h.filters):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(name)s [%(levelname)s] %(message)s"))
        handler.addFilter(_EdgelmOnly())
        root.addHandler(handler)


def _silence_transformers() -> None:
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass

