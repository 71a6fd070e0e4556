"""executorch: the .pte program through the ExecuTorch runtime (XNNPACK-delegated where the export lowered it).
Thread count is XNNPACK's threadpool size."""

from __future__ import annotations

from edgelm.bench.runtimes import DEFAULT_INPUTS, Runner, Target
from edgelm.errors import EdgelmError

ARTIFACT = "pte"


def unavailable() -> str | None:
    try:
        from executorch.runtime import Runtime  # noqa: F401
    except Exception as exc:  # ImportError or a broken native library
        return f"executorch runtime not importable ({type(exc).__name__}: {str(exc).splitlines()[0][:120]}); pip install edgelm[mobile]"
    return None


class ExecutorchRunner(Runner):
    runtime = "executorch"

    def __init__(self, target: Target, threads: int | None):
        from executorch.extension.pybindings import portable_lib
        from executorch.runtime import Runtime

        if threads:
            portable_lib._unsafe_reset_threadpool(threads)
        self.threads = portable_lib._threadpool_get_thread_count()
        program = Runtime.get().load_program(str(target.files["pte"]))
        self.method = program.load_method("forward")
        count = self.method.metadata.num_inputs()
        self.input_names = list(target.input_names or DEFAULT_INPUTS)[:count]

    def run(self, feeds):
        import torch

        inputs = [torch.from_numpy(a) for a in self.pick(feeds).values()]
        try:
            outputs = self.method.execute(inputs)
        except RuntimeError as exc:
            if "set_inputs" not in str(exc):
                raise
            shapes = [tuple(t.shape) for t in inputs]
            raise EdgelmError(f"executorch: the .pte rejects inputs of shapes {shapes}; it was exported for other "
                              "(static or bounded) shapes — re-export with dynamic shapes or bench that shape") from None
        return [o.numpy() if hasattr(o, "numpy") else o for o in outputs]


def open(target: Target, threads: int | None) -> Runner:
    return ExecutorchRunner(target, threads)
