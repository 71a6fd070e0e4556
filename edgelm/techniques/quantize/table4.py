"""int8 matmuls with a 4-bit token embedding table (`method: int8-dynamic`, `table_bits: 4`).

An encoder's word-embedding table is a third of MiniLM's weights: left int8 it keeps the artifact ~16 MB, while
int4 MatMulNBits for the layers is slower than int8 MatMulInteger at sentence lengths. So the layers stay
MatMulInteger (quantize_dynamic) and only the table becomes a GatherBlockQuantized 4-bit lookup (the int4 path's
RTN blocks, stored as uint8 for the .ort format)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import onnx

from edgelm.export.onnx_io import save_model

TABLE_BITS = (8, 4)


def int4_embedding_tables(dst: Path, options) -> int:
    """Rewrite the float token-embedding Gathers of the int8 graph `dst` as 4-bit GatherBlockQuantized (in place,
    blocks of `table_block_size`, else `block_size`); returns how many tables were rewritten."""
    from edgelm.techniques.quantize.int4._nbits import rtn_pass
    from edgelm.techniques.quantize.packing import gather_tables_as_uint8

    model = onnx.load(str(dst))
    tables = token_tables(model, options.exclude)
    if not tables:
        return 0
    others = [n.name for n in model.graph.node if n.op_type == "Gather" and n.name not in tables]
    table_options = replace(options, block_size=options.table_block_size or options.block_size,
                            exclude=[*options.exclude, *others])
    model = rtn_pass(model, table_options, ("Gather",))
    gather_tables_as_uint8(model)
    save_model(model, dst)
    return sum(n.op_type == "GatherBlockQuantized" for n in model.graph.node)


def token_tables(model: onnx.ModelProto, exclude=()) -> list[str]:
    """Names of the Gathers that look up a float 2-D table by the graph's input_ids (position / type tables are
    indexed by computed positions or token_type_ids: small, they stay int8 Gathers)."""
    inits = {t.name: t for t in model.graph.initializer}
    return [n.name for n in model.graph.node if n.op_type == "Gather" and n.name not in exclude
            and n.input[0] in inits and len(inits[n.input[0]].dims) == 2
            and inits[n.input[0]].data_type == onnx.TensorProto.FLOAT and n.input[1] == "input_ids"]
