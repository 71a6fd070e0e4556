"""executorch: the .pte program through the ExecuTorch runtime (XNNPACK-delegated where the export lowered it).
Thread count is XNNPACK's threadpool size."""

from __future__ import annotations

import numpy as np

from edgelm.runtimes.base import DEFAULT_INPUTS, Runner, RuntimeSpec, Target, register_runtime
from edgelm.core.errors import EdgelmError


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
        entry = target.manifest.get("executorch") or {}
        self.input_names = list(entry.get("inputs") or target.input_names or DEFAULT_INPUTS)[:count]
        self.static_cache = entry.get("static_kv_cache")  # decoders: (input_ids, cache_position), cache inside

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


    def generator(self):
        if self.input_names != ["input_ids", "cache_position"]:
            return super().generator()
        return StaticCacheGenerator(self.method)


class StaticCacheGenerator:
    """Greedy steps over a decoder .pte whose KV cache lives inside the program, addressed by cache_position."""

    def __init__(self, method):
        self.method = method

    def _next(self, ids, start: int) -> int:
        import torch

        ids_t = torch.from_numpy(np.ascontiguousarray(ids, dtype=np.int64)).reshape(1, -1)
        positions = torch.arange(start, start + ids_t.shape[1], dtype=torch.long)
        return int(self.method.execute([ids_t, positions])[0][0, -1].argmax())

    def prefill(self, ids):
        return self._next(ids, 0), ids.shape[-1]

    def decode(self, token, position):
        return self._next(np.array([[token]]), position), position + 1


def open(target: Target, threads: int | None) -> Runner:
    return ExecutorchRunner(target, threads)


RUNTIME = register_runtime(RuntimeSpec("executorch", "pte", "mobile", unavailable, open, generates=True,
                                        libraries=("torch", "executorch.runtime", "executorch.extension.pybindings.portable_lib"),
                                        evaluates=("pte",)))
