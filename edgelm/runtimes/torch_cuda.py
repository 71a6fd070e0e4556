"""torch-cuda: eager PyTorch on the GPU (outputs are copied back, which synchronises, so timings are honest)."""

from __future__ import annotations

from edgelm.runtimes.base import Runner, Target

LIBRARIES = ("torch", "transformers")  # imported (and timed as import_ms) before the model loads
ARTIFACT = "torch"


def unavailable() -> str | None:
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        build = torch.__version__
        why = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA device is visible"
        return f"torch.cuda.is_available() is False ({why}; torch {build})"
    return None


def open(target: Target, threads: int | None) -> Runner:
    from edgelm.runtimes.torch_cpu import TorchRunner

    return TorchRunner(target, threads, "cuda", "torch-cuda")
