"""A runtime is one registered record: a fake one, registered in a few lines, is listed by `edgelm stages` and
`edgelm bench --help`, accepted by the bench config and by eval, and benched in a worker process; an
unavailable one is skipped with its reason. The artifact-format table drives eval's `auto` and the app bundle."""

import importlib
import json
from contextlib import contextmanager

import numpy as np
import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from edgelm.cli import main
from edgelm.core.errors import EdgelmError
from edgelm.runtimes.base import RUNTIMES, RuntimeSpec, register_runtime
from edgelm.export.formats import FORMATS, shipped_formats
from edgelm.stages.bench import BenchConfig


def always_available():  # module-level, so a bench worker (a fresh process) can receive the record
    return None


def never_available():
    return "the fake board is not plugged in"


def fake_runtimes() -> list[RuntimeSpec]:
    ort_cpu, torch_cpu = RUNTIMES.get("ort-cpu"), RUNTIMES.get("torch-cpu")
    return [RuntimeSpec("fake-cpu", "onnx", "cpu", always_available, ort_cpu.open, generates=False,
                        libraries=("onnxruntime",), evaluates=("onnx",)),
            RuntimeSpec("fake-npu", "onnx", "mobile", never_available, ort_cpu.open, generates=False),
            RuntimeSpec("fake-torch", "torch", "cpu", always_available, torch_cpu.open, generates=False)]


@contextmanager
def registered(specs):
    for spec in specs:
        register_runtime(spec)
    try:
        yield
    finally:
        for spec in specs:
            RUNTIMES.unregister(spec.name)


@pytest.fixture
def fakes():
    with registered(fake_runtimes()):
        yield


def test_fake_runtime_is_offered_and_accepted(fakes):
    stages = CliRunner().invoke(main, ["stages"])
    assert stages.exit_code == 0 and "fake-cpu" in next(ln for ln in stages.output.splitlines() if "runtimes =" in ln)
    help_text = CliRunner().invoke(main, ["bench", "--help"]).output
    assert "fake-cpu" in help_text and "fake-npu" in help_text
    assert BenchConfig(runtimes=["fake-cpu", "ort-cpu"]).runtimes == ["fake-cpu", "ort-cpu"]


def test_an_unregistered_runtime_is_refused():
    with registered(fake_runtimes()):
        BenchConfig(runtimes=["fake-cpu"])
    assert "fake-cpu" not in RUNTIMES
    with pytest.raises(ValidationError, match="unknown runtime 'fake-cpu'"):
        BenchConfig(runtimes=["fake-cpu"])


def test_bench_times_the_fake_and_skips_the_unavailable_one(fakes, tiny_export, tmp_path):
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(main, ["bench", str(tiny_export), "--runtime", "fake-cpu", "fake-npu", "ort-cpu",
                                       "--shapes", "1x8", "--seconds", "0.1", "--json", str(out)])
    assert result.exit_code == 0, result.output
    rows = {r["runtime"]: r for r in json.loads(out.read_text())["rows"]}
    assert rows["fake-cpu"]["p50_ms"] > 0 and rows["fake-cpu"]["n"] >= 3 and "error" not in rows["fake-cpu"]
    assert rows["fake-cpu"]["size_mb"] == rows["ort-cpu"]["size_mb"]  # the model.onnx it declares it loads
    assert rows["fake-npu"]["skipped"] == "the fake board is not plugged in"


def test_eval_runs_the_artifact_on_the_fake(fakes, tiny_export):
    from edgelm.models.loading import load_bundle
    from edgelm.stages.eval import EvalConfig, candidate_model

    assert EvalConfig(runtime=["fake-cpu"]).runtime == ["fake-cpu"]
    bundle = load_bundle(tiny_export, load_model=False)
    fake, ort_cpu = candidate_model(bundle, "fake-cpu"), candidate_model(bundle, "ort-cpu")
    assert fake.name == "fake-cpu" and fake.info == {"artifact": "model.onnx", "artifact_format": "onnx"}
    texts = ["a good movie", "a dull and far too long film"]
    np.testing.assert_allclose(fake.run(texts), ort_cpu.run(texts), rtol=1e-6)
    with pytest.raises(EdgelmError, match="holds no torch model"):  # a torch-on-cpu runtime is the torch model
        candidate_model(bundle, "fake-torch")


def test_a_runtime_that_cannot_generate_skips_decode_cases(fakes, tiny_model, tmp_path):
    from edgelm.measure import worker
    from edgelm.measure.inputs import decode_case, save_cases
    from edgelm.models.loading import load_tokenizer
    from edgelm.runtimes.base import resolve_target

    folder = tiny_model("llama", "causal-lm")
    cases = save_cases([decode_case(load_tokenizer(folder), 4, 3)], tmp_path / "feeds.npz")
    spec = {"runtime": "fake-torch", "threads": 1, "target": resolve_target(folder).to_json(),
            "feeds": str(tmp_path / "feeds.npz"), "cases": cases,
            "budget": {"warmup": 1, "min_repeats": 3, "max_repeats": 10, "seconds": 0.1, "rel_tol": 0.02}}
    result = worker.run_spec(spec)
    assert result["results"] == [{"case": 0, "skipped": "fake-torch: token generation is not supported on this runtime"}]


def test_eval_auto_takes_the_preferred_artifact_on_its_cpu_runtime(fakes):
    from edgelm.stages.eval import auto_runtime

    assert auto_runtime({"onnx": 1, "ort": 1, "pte": 1, "manifest": 1}) == "ort-mobile"
    assert auto_runtime({"onnx": 1}) == "ort-cpu"  # not ort-cuda (a GPU), not fake-cpu (registered later)
    assert auto_runtime({"pte": 1}) == "executorch" and auto_runtime({"manifest": 1}) == "torch"


def test_app_bundle_ships_one_artifact_per_engine():
    assert shipped_formats({"onnx", "ort", "pte", "manifest"}) == ["ort", "pte"]
    assert shipped_formats({"onnx"}) == ["onnx"] and shipped_formats({"pte"}) == ["pte"]


def test_every_format_names_its_file_and_an_existing_writer():
    for fmt in FORMATS.values():
        module, function = fmt.writer.split(":")
        assert callable(getattr(importlib.import_module(module), function)) and fmt.file == f"model.{fmt.name}"
    assert {spec.artifact for _, spec in RUNTIMES.items()} <= {"torch", *FORMATS}
