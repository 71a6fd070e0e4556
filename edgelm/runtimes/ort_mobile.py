"""ort-mobile: the .ort model with mobile-typical session settings — few intra-op threads (swept 1/2/4 by the
bench), no spin-waiting between ops (saves battery, costs latency), sequential execution."""

from __future__ import annotations

from edgelm.runtimes.base import Runner, RuntimeSpec, Target, register_runtime


def unavailable() -> str | None:
    import importlib.util

    return None if importlib.util.find_spec("onnxruntime") else "onnxruntime is not installed"


def configure(options) -> None:
    import onnxruntime as ort

    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.add_session_config_entry("session.load_model_format", "ORT")


def open(target: Target, threads: int | None) -> Runner:
    from edgelm.runtimes.ort_cpu import OrtRunner

    return OrtRunner(target.files["ort"], "ort-mobile", threads or 1, ["CPUExecutionProvider"], configure, target.task)


RUNTIME = register_runtime(RuntimeSpec("ort-mobile", "ort", "mobile", unavailable, open, generates=True,
                                        libraries=("onnxruntime",), default_threads=(1, 2, 4),
                                        evaluates=("ort", "onnx")))
