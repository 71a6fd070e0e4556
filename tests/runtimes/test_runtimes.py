"""The uniform runner API on every runtime: outputs checked against the torch source, absent runtimes give a
reason (never a fake), targets resolved from export folders and HF folders."""

import numpy as np
import pytest

from edgelm.runtimes.base import RUNTIMES, artifact_size_mb, open_runner, resolve_target, unavailable
from edgelm.core.errors import EdgelmError


def feeds(batch=2, seq=7):
    ids = np.arange(5, 5 + batch * seq, dtype=np.int64).reshape(batch, seq) % 60 + 5
    return {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}


def test_resolve_export_folder(tiny_export):
    target = resolve_target(tiny_export)
    assert target.task == "sequence-classification"
    assert set(target.files) == {"onnx", "ort"} and target.model_dir is not None
    assert target.input_names == ["input_ids", "attention_mask", "token_type_ids"]
    assert target.tokenizer_dir == tiny_export
    assert artifact_size_mb("ort-cpu", target) > 0 and artifact_size_mb("torch-cpu", target) > 0


def test_resolve_plain_hf_folder(tiny_model):
    target = resolve_target(tiny_model("bert", "sequence-classification"))
    assert target.files == {} and target.model_dir == target.path
    assert unavailable("ort-cpu", target).endswith("no model.onnx (export it with --format onnx)")
    with pytest.raises(EdgelmError, match="ort-mobile unavailable: .*no model.ort"):
        open_runner("ort-mobile", target)


def test_unknown_runtime_and_folder(tmp_path):
    with pytest.raises(EdgelmError, match="unknown runtime 'tflite'"):
        unavailable("tflite")
    with pytest.raises(EdgelmError, match="no such folder"):
        resolve_target(tmp_path / "nope")


@pytest.mark.parametrize("runtime,threads", [("ort-cpu", None), ("ort-cpu", 1), ("ort-mobile", 1), ("ort-mobile", 2)])
def test_ort_runners_match_torch(tiny_export, runtime, threads):
    torch_out = open_runner("torch-cpu", tiny_export).run(feeds())[0]
    runner = open_runner(runtime, tiny_export, threads=threads)
    out = runner.run(feeds())
    assert runner.runtime == runtime and len(out) == 1 and out[0].shape == torch_out.shape == (2, 2)
    np.testing.assert_allclose(out[0], torch_out, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(runner.run(feeds(1, 3))[0], open_runner("torch-cpu", tiny_export).run(feeds(1, 3))[0],
                               rtol=1e-4, atol=1e-5)  # dynamic batch and length


def test_ort_mobile_session_settings(tiny_export):
    import onnxruntime as ort

    runner = open_runner("ort-mobile", tiny_export, threads=2)
    options = runner.session.get_session_options()
    assert options.intra_op_num_threads == 2
    assert options.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert str(runner.session._model_path).endswith("model.ort")


def test_runner_names_missing_feeds(tiny_export):
    runner = open_runner("ort-cpu", tiny_export)
    with pytest.raises(EdgelmError, match="feeds lack the model inputs"):
        runner.run({"input_ids": feeds()["input_ids"]})


def test_every_runtime_is_available_or_says_why():
    for runtime in RUNTIMES.names():
        reason = unavailable(runtime)
        assert reason is None or (isinstance(reason, str) and len(reason) > 10)


@pytest.mark.parametrize("runtime", ["torch-cuda", "ort-cuda"])
def test_cuda_runtimes(tiny_export, runtime):
    reason = unavailable(runtime)
    if reason:
        pytest.skip(f"{runtime} unavailable: {reason}")
    out = open_runner(runtime, tiny_export).run(feeds())[0]
    np.testing.assert_allclose(out, open_runner("torch-cpu", tiny_export).run(feeds())[0], rtol=1e-3, atol=1e-4)


@pytest.mark.slow
def test_executorch_runner_matches_torch(tiny_model, tmp_path):
    """ExecuTorch lowering takes ~1 min even for a tiny model, hence slow (EDGELM_SLOW=1)."""
    reason = unavailable("executorch")
    if reason:
        pytest.skip(reason)
    from tests.measure.exports import export_folder

    folder = export_folder(tiny_model("bert", "sequence-classification"), tmp_path / "exp", ("pte",))
    runner = open_runner("executorch", folder, threads=1)
    assert runner.input_names == ["input_ids", "attention_mask", "token_type_ids"] and runner.threads == 1
    np.testing.assert_allclose(runner.run(feeds())[0], open_runner("torch-cpu", folder).run(feeds())[0], rtol=1e-4, atol=1e-5)
