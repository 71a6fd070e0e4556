"""Machine facts recorded with every figure, and a worker's peak RSS that is its own (not the parent's)."""

import subprocess
import sys

import numpy as np

from edgelm.measure.machine import library_versions, machine_info, peak_rss_mb


def test_machine_info_fields():
    info = machine_info()
    assert info["cpu_model"] and info["logical_cores"] >= 1 and info["usable_cores"] >= 1
    assert isinstance(info["flags"], list) and "python" in info
    assert "numpy" in library_versions()


def test_child_peak_rss_does_not_inherit_the_parent():
    ballast = np.ones(300 * 2**20 // 8)  # ~300 MiB resident in this process
    ballast[::512] = 2.0
    child = subprocess.run([sys.executable, "-c", "from edgelm.measure.machine import peak_rss_mb; print(peak_rss_mb())"],
                           capture_output=True, text=True, check=True)
    assert peak_rss_mb() > 300 > float(child.stdout)
