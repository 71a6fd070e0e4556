"""The one outcome type of every verification (artifact vs torch, quantized vs float) and the cosine they share.

A check returns a Verdict and never raises on a miss: its caller decides whether a failed verdict stops the run
(`raise_if_failed`, the export stage) or is recorded (`recorded`, the quantize stage's --on-parity-fail warn).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edgelm.core.errors import EdgelmError


@dataclass
class Verdict:
    ok: bool
    figures: dict
    failures: list[str] = field(default_factory=list)  # one human-readable reason per missed threshold
    checks: dict = field(default_factory=dict)  # per-figure table {name: {value, tolerance, ok}}, where kept

    @classmethod
    def of(cls, figures: dict, failures: list[str], checks: dict | None = None) -> "Verdict":
        return cls(not failures, figures, list(failures), checks or {})

    def reasons(self) -> str:
        return "; ".join(self.failures)

    def raise_if_failed(self, before: str, after: str = "") -> None:
        """One EdgelmError line: `before`, the reasons, `after`."""
        if not self.ok:
            raise EdgelmError(f"{before}{self.reasons()}{after}")

    def recorded(self, before: str = "") -> dict:
        """The figures with `ok` and, when failed, `error` (`before` + the reasons): what a stage's metrics keep."""
        return {**self.figures, "ok": self.ok, **({} if self.ok else {"error": before + self.reasons()})}


ZERO_ROW_ATOL = 1e-6  # a row this close to another has no direction to compare: its cosine is undefined


def cosine_rows(a, b) -> np.ndarray:
    """Cosine between matching rows (the last axis), in the inputs' precision. Identical rows agree (1.0), whatever
    their norm; where a norm is zero (or under/overflows) the rows agree when their max abs diff is <= ZERO_ROW_ATOL."""
    a, b = np.asarray(a), np.asarray(b)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        norms = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
        cosine = (a * b).sum(-1) / norms
        undefined = (norms == 0) | ~np.isfinite(norms)
        close = np.abs(a - b).max(axis=-1, initial=0.0) <= ZERO_ROW_ATOL
    cosine = np.where(undefined, np.where(close, 1.0, 0.0), cosine)
    return np.where((a == b).all(-1), 1.0, cosine).astype(np.result_type(a, b, np.float32))
