"""Where a figure was measured: CPU model and the SIMD flags that decide kernel choice, cores, memory, load,
library versions. Read from /proc and package metadata only (no heavy imports)."""

from __future__ import annotations

import importlib.metadata as md
import os
import platform

INTERESTING_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
                     "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16",
                     "asimd", "asimddp", "asimdhp", "sve", "i8mm", "bf16")
LIBRARIES = ("edgelm", "torch", "onnxruntime", "onnxruntime-gpu", "executorch", "transformers", "onnx", "numpy")


def cpu_info() -> dict:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware", "cpu model") and value.strip():
            model = value.strip()
        elif key in ("flags", "features"):
            flags.update(value.split())
    return {"cpu_model": model, "flags": [f for f in INTERESTING_FLAGS if f in flags]}


def int8_matmul_saturates() -> bool:
    """True on x86 CPUs without VNNI: onnxruntime's u8s8 MatMulInteger then uses VPMADDUBSW, whose int16 pair sums
    can saturate (onnxruntime's quantization docs; seen as 12.8 vs 36.8 dB on one tiny classifier). 7-bit weights
    (reduce_range) keep every pair sum inside int16."""
    flags = set(cpu_info()["flags"])
    return "avx2" in flags and not flags & {"avx512_vnni", "avx_vnni", "amx_int8"}


def machine_info() -> dict:
    info = cpu_info()
    try:
        import psutil

        physical = psutil.cpu_count(logical=False)
        memory_gb = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        physical, memory_gb = None, None
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info.update({
        "logical_cores": os.cpu_count(), "physical_cores": physical, "usable_cores": usable, "memory_gb": memory_gb,
        "load_avg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(), "python": platform.python_version(),
    })
    return info


def library_versions() -> dict:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return versions


def reset_peak_rss() -> bool:
    """Start this process's peak-RSS count afresh (Linux: VmHWM := current RSS), so peak_rss_mb() after a step is
    that step's own peak; False where the platform cannot (then peak_rss_mb is the peak since start)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MB (10^6 bytes). Linux: VmHWM, which belongs to the exec'd image (getrusage's
    ru_maxrss would carry the forking parent's peak into a fresh worker). Elsewhere ru_maxrss."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) * 1024 / 1e6, 1)  # VmHWM is in KiB
    except OSError:
        pass
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak * (1 if sys.platform == "darwin" else 1024) / 1e6, 1)  # bytes on macOS, KiB elsewhere


def read_bandwidth_gb_s(threads: int = 2, mb: int = 512, repeats: int = 5) -> float:
    """Best-of-`repeats` read bandwidth (GB/s, 10^9) of `threads` threads summing their own share of a buffer
    far larger than the caches (numpy releases the GIL in the sum): the decode roofline's numerator."""
    import threading
    import time

    import numpy as np

    parts = [np.ones(mb * 2**20 // 8 // threads) for _ in range(threads)]
    best = float("inf")
    for _ in range(repeats):
        workers = [threading.Thread(target=part.sum) for part in parts]
        started = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        best = min(best, time.perf_counter() - started)
    return sum(p.nbytes for p in parts) / best / 1e9
