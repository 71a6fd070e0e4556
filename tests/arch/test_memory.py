"""Per-stage peak RSS: the pipeline resets the process's peak before each stage, so a stage record's `peak_rss_mb` is that
stage's own peak, not the run's so far."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from edgelm.measure.machine import peak_rss_mb, reset_peak_rss


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM reset is Linux-only")
def test_reset_starts_the_peak_afresh():
    block = np.ones(50 * 2**20)  # 400 MiB, touched
    high = peak_rss_mb()
    del block
    assert reset_peak_rss()
    assert peak_rss_mb() < high - 300
