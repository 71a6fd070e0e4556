"""ort-cpu: onnxruntime CPU execution provider on model.onnx, default (server-like) session settings."""

from __future__ import annotations

from edgelm.bench.runtimes import Runner, Target, onnx_input_names

ARTIFACT = "onnx"


def unavailable() -> str | None:
    import importlib.util

    return None if importlib.util.find_spec("onnxruntime") else "onnxruntime is not installed"


class OrtRunner(Runner):
    def __init__(self, path, runtime: str, threads: int | None, providers: list, configure=None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        if configure:
            configure(options)
        self.session = ort.InferenceSession(str(path), options, providers=providers)
        self.runtime, self.threads = runtime, threads
        self.input_names = onnx_input_names(self.session)

    def run(self, feeds):
        return self.session.run(None, self.pick(feeds))

    def generator(self):
        from edgelm.bench.decoding import onnx_generator

        return onnx_generator(self)


def open(target: Target, threads: int | None) -> Runner:
    return OrtRunner(target.files["onnx"], "ort-cpu", threads, ["CPUExecutionProvider"])
