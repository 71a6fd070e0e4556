"""ort-cuda: onnxruntime CUDA execution provider (needs onnxruntime-gpu and a CUDA device)."""

from __future__ import annotations

from edgelm.runtimes.base import Runner, RuntimeSpec, Target, register_runtime


def unavailable() -> str | None:
    try:
        import onnxruntime as ort
    except ImportError:
        return "onnxruntime is not installed"
    providers = ort.get_available_providers()
    if "CUDAExecutionProvider" not in providers:
        return (f"onnxruntime {ort.__version__} has no CUDAExecutionProvider (providers: {', '.join(providers)}); "
                "install the cuda extra (onnxruntime-gpu) on a CUDA machine")
    return None


def open(target: Target, threads: int | None) -> Runner:
    from edgelm.runtimes.ort_cpu import OrtRunner

    runner = OrtRunner(target.files["onnx"], "ort-cuda", threads, ["CUDAExecutionProvider"], task=target.task)
    if "CUDAExecutionProvider" not in runner.session.get_providers():
        from edgelm.core.errors import EdgelmError

        raise EdgelmError("ort-cuda: the CUDA provider failed to initialise (no device or CUDA/cuDNN libraries)")
    return runner


RUNTIME = register_runtime(RuntimeSpec("ort-cuda", "onnx", "cuda", unavailable, open, generates=True,
                                        libraries=("onnxruntime",), evaluates=("onnx",)))
