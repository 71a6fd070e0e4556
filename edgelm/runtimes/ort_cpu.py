"""ort-cpu: onnxruntime CPU execution provider on model.onnx, default (server-like) session settings."""

from __future__ import annotations

from edgelm.runtimes.base import Runner, RuntimeSpec, Target, onnx_input_names, register_runtime
from edgelm.core.errors import EdgelmError


def unavailable() -> str | None:
    import importlib.util

    return None if importlib.util.find_spec("onnxruntime") else "onnxruntime is not installed"


class OrtRunner(Runner):
    def __init__(self, path, runtime: str, threads: int | None, providers: list, configure=None, task: str = ""):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        if configure:
            configure(options)
        self.lm, self.runtime, self.threads, self.no_lm = None, runtime, threads, "not a causal-lm export"
        if task == "causal-lm":  # one session serves plain runs and KV-cache generation
            from edgelm.runtimes.decoding import onnx_causal_lm

            try:
                self.lm = onnx_causal_lm(path, providers, options)
            except EdgelmError as exc:
                self.no_lm = str(exc)
        self.session = self.lm.session if self.lm else ort.InferenceSession(str(path), options, providers=providers)
        self.input_names = onnx_input_names(self.session)

    def run(self, feeds):
        return self.session.run(None, self.pick(feeds))

    def generator(self):
        from edgelm.runtimes.decoding import OnnxGenerator

        if self.lm is None:
            raise EdgelmError(f"{self.runtime}: cannot generate: {self.no_lm}")
        return OnnxGenerator(self.lm)


def open(target: Target, threads: int | None) -> Runner:
    return OrtRunner(target.files["onnx"], "ort-cpu", threads, ["CPUExecutionProvider"], task=target.task)


RUNTIME = register_runtime(RuntimeSpec("ort-cpu", "onnx", "cpu", unavailable, open, generates=True,
                                        libraries=("onnxruntime",), evaluates=("onnx", "ort")))
