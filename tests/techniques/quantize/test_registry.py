"""int4 algorithms are registered by name: one registered in a few lines (a counting wrapper of rtn) is a CLI
choice, listed by `edgelm stages`, accepted by the quantize config and run by the quantize stage; an unknown name
is one line naming the registered ones. The built-in five declare what the int4 path needs to know."""

from __future__ import annotations

import dataclasses

import onnx
import pytest
from click.testing import CliRunner

from edgelm.cli import main  # built before the fake is registered: its choices must still offer it
from edgelm.core.errors import EdgelmError
from edgelm.core.stage import get_stage
from edgelm.techniques.quantize.int4 import INT4_ALGORITHMS
from edgelm.techniques.quantize.onnx_quant import QuantOptions, quantize_onnx

FAKE = "counted-rtn"


def register_fake(calls: list) -> None:
    rtn = INT4_ALGORITHMS.get("rtn")

    def quantize(job):
        calls.append(job.options.block_size)
        return rtn.quantize(job)

    INT4_ALGORITHMS.register(FAKE, dataclasses.replace(rtn, name=FAKE, summary="rtn that counts its calls",
                                                       quantize=quantize))


@pytest.fixture
def fake_algorithm():
    calls: list = []
    register_fake(calls)
    yield calls
    INT4_ALGORITHMS.unregister(FAKE)
    assert FAKE not in INT4_ALGORITHMS


def test_builtin_algorithms_declare_their_needs():
    assert set(INT4_ALGORITHMS.names()) >= {"rtn", "kquant", "affine", "hqq", "gptq"}
    needs = {name: entry.needs_calibration for name, entry in INT4_ALGORITHMS.items()}
    assert {name for name, needed in needs.items() if needed} == {"gptq", "awq-gptq", "imatrix", "awq"}
    assert INT4_ALGORITHMS.get("rtn").quantizes_lone_table and not INT4_ALGORITHMS.get("kquant").quantizes_lone_table
    assert INT4_ALGORITHMS.get("affine").tie is not INT4_ALGORITHMS.get("rtn").tie  # affine shares its offsets too
    assert {name for name, entry in INT4_ALGORITHMS.items() if entry.table_block_size} == {"affine", "imatrix", "awq", "gptq", "awq-gptq"}


def test_fake_algorithm_is_a_choice_everywhere(fake_algorithm):
    config = get_stage("quantize").Config(method="int4", algorithm=FAKE)
    assert config.algorithm == FAKE
    listed = CliRunner().invoke(main, ["stages"])
    assert listed.exit_code == 0 and FAKE in next(line for line in listed.output.splitlines() if "algorithm =" in line)
    # registered after the CLI was built: its choices are read from the registry when shown and checked
    helped = CliRunner().invoke(main, ["quantize", "--help"])
    choices = helped.output[helped.output.index("--algorithm"):].split("]")[0]
    assert FAKE in choices and "rtn" in choices, choices


def test_fake_algorithm_runs_through_the_quantize_stage(fake_algorithm, tiny_onnx, tmp_path):
    from tests.stages.test_quantize import float_bundle, quantize

    bundle = float_bundle(tiny_onnx, "llama", "causal-lm", tmp_path)
    metrics, out = quantize(bundle, tmp_path, method="int4", algorithm=FAKE, block_size=16, parity_samples=4)
    assert fake_algorithm == [16]
    assert metrics["quantization"]["params"]["algorithm"] == FAKE
    assert "MatMulNBits" in {n.op_type for n in onnx.load(str(out.artifacts["onnx"])).graph.node}


def test_unknown_algorithm_is_one_line_naming_the_choices(tiny_onnx, tmp_path):
    from edgelm.cli import main

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("stages:\n  - {kind: quantize, method: int4, algorithm: nope}\n")
    result = CliRunner().invoke(main, ["run", str(recipe), "-o", str(tmp_path / "run")])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
    assert "unknown int4 algorithm 'nope'; use one of" in result.output and "rtn" in result.output
    _, src = tiny_onnx("llama", "causal-lm")
    with pytest.raises(EdgelmError, match="unknown int4 algorithm 'nope'; use one of .*kquant"):
        quantize_onnx(src, tmp_path / "m.onnx", QuantOptions(method="int4", algorithm="nope"))


def test_block_size_off_the_grid_is_one_line(tiny_onnx, tmp_path):
    """onnxruntime loads MatMulNBits / GatherBlockQuantized only for power-of-two blocks from 16 (it crashed or
    wrote an unloadable graph before the algorithms declared their grid)."""
    _, src = tiny_onnx("llama", "causal-lm")
    with pytest.raises(EdgelmError, match="block_size 24 is off its block grid; use a power of two, at least 16"):
        quantize_onnx(src, tmp_path / "m.onnx", QuantOptions(method="int4", algorithm="kquant", block_size=24))
    with pytest.raises(EdgelmError, match="affine: table_block_size 8 is off"):
        quantize_onnx(src, tmp_path / "m.onnx", QuantOptions(method="int4", algorithm="affine", table_block_size=8))
