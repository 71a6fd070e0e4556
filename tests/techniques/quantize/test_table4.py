"""int8-dynamic with a 4-bit token table: the layers stay MatMulInteger, only the word-embedding lookup becomes
GatherBlockQuantized; the graph shrinks below plain int8 and stays close to the float graph."""

from __future__ import annotations

import onnx
import pytest

from edgelm.data.readers import calibration_texts
from edgelm.export.onnx_io import size_mb
from edgelm.techniques.quantize.onnx_quant import QuantOptions, quantize_onnx
from edgelm.verify import fidelity

TEXTS = calibration_texts(8, seed=5)


def ops(path) -> list[str]:
    return [n.op_type for n in onnx.load(str(path)).graph.node]


@pytest.mark.parametrize("task", ["sequence-classification", "feature-extraction"])
def test_int8_layers_with_a_4bit_table(task, tiny_onnx, tiny_tokenizer, tmp_path):
    folder, src = tiny_onnx("bert", task)
    tok = tiny_tokenizer(folder)
    int8, mixed = tmp_path / "int8" / "model.onnx", tmp_path / "mixed" / "model.onnx"
    quantize_onnx(src, int8, QuantOptions(method="int8-dynamic"))
    info = quantize_onnx(src, mixed, QuantOptions(method="int8-dynamic", table_bits=4, block_size=16))
    kinds = ops(mixed)
    assert kinds.count("GatherBlockQuantized") == 1 and "MatMulInteger" in kinds and "MatMulNBits" not in kinds
    assert info["params"]["table_bits"] == 4 and size_mb(mixed) < size_mb(int8)
    figures = fidelity.compare(task, fidelity.run_graph(src, tok, TEXTS), fidelity.run_graph(mixed, tok, TEXTS))
    assert fidelity.check(figures, "int8-dynamic").ok, figures


def test_plain_int8_params_are_unchanged():
    assert "table_bits" not in QuantOptions(method="int8-dynamic").params()


def test_excluded_table_stays_float(tiny_onnx, tmp_path):
    from edgelm.techniques.quantize.table4 import token_tables

    folder, src = tiny_onnx("bert", "sequence-classification")
    table = token_tables(onnx.load(str(src)))
    assert len(table) == 1
    dst = tmp_path / "model.onnx"
    quantize_onnx(src, dst, QuantOptions(method="int8-dynamic", table_bits=4, exclude=table))
    assert "GatherBlockQuantized" not in ops(dst)
