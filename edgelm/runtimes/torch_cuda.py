"""torch-cuda: eager PyTorch on the GPU (outputs are copied back, which synchronises, so timings are honest)."""

from __future__ import annotations

from edgelm.runtimes.base import Runner, RuntimeSpec, Target, register_runtime


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


RUNTIME = register_runtime(RuntimeSpec("torch-cuda", "torch", "cuda", unavailable, open, generates=True,
                                        libraries=("torch", "transformers")))
