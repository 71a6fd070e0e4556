"""int4 weight-only algorithms, registered by name: one module per algorithm in this package.

As torchao's `register_quantize_module_handler` ties a config type to the function that quantizes a module, a
module here ties a name to the function that quantizes a graph's MatMuls (`@int4_algorithm(...)`), and declares
what the int4 path must know about it: its one-line summary, whether it needs calibration data, its block grid
(whether it also takes `table_block_size`) and how a tied embedding table reads the LM head's 4 bits. The int4
path (`onnx_quant._int4`) asks the registered entry and never names an algorithm; adding one is adding a module.

The registry is read when the CLI starts (choices, help), so these modules import onnx/onnxruntime inside
their functions. Modules whose name starts with "_" hold shared helpers and register nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from edgelm.core.errors import EdgelmError
from edgelm.core.registry import Registry


@dataclass(frozen=True)
class Int4Job:
    """What an algorithm's `quantize` is handed. `model` is the float graph made ready for int4 (a fused LM head
    unfused, a fused QKV projection split into a MatMul); `options.exclude` names the nodes kept float."""

    model: Any  # onnx.ModelProto, rewritten in place or replaced by the returned graph
    options: Any  # onnx_quant.QuantOptions
    tied: Any  # tied.TiedPair when the embedding table is to read the LM head's bits, else None
    lone_table: bool  # the embedding table is quantized and not tied: on its own, as a GatherBlockQuantized
    reader: Any = None  # onnxruntime CalibrationDataReader (given when the algorithm needs calibration)


def share_lm_head_bits(model, tied, options) -> bool:
    """The default tie: the embedding lookup becomes a GatherBlockQuantized over the LM head's MatMulNBits data."""
    from edgelm.techniques.quantize.tied import tie_to_lm_head

    return tie_to_lm_head(model, tied, options.block_size)


@dataclass(frozen=True)
class BlockGrid:
    rule: str
    fits: Callable[[int], bool]


MATMULNBITS_GRID = BlockGrid("a power of two, at least 16", lambda size: size >= 16 and size & (size - 1) == 0)


@dataclass(frozen=True)
class Int4Algorithm:
    name: str
    summary: str  # one line, shown in the quantize stage's help
    quantize: Callable[[Int4Job], Any]  # -> the graph with its MatMuls (and, see below, maybe the table) in 4 bits
    needs_calibration: bool = False
    quantizes_lone_table: bool = False  # `quantize` also takes a lone table's Gather; else it goes through RTN apart
    tie: Callable[[Any, Any, Any], bool] = share_lm_head_bits  # (model, tied, options) -> the table reads the head
    blocks: BlockGrid = MATMULNBITS_GRID  # onnxruntime loads MatMulNBits / GatherBlockQuantized on this grid only
    table_block_size: bool = False  # the tied table / LM head may take their own block size (`table_block_size`)

    def check(self, options, reader) -> None:
        """One-line errors for what this algorithm cannot do with these options (before any work is done)."""
        if self.needs_calibration and reader is None:
            free = [name for name, entry in INT4_ALGORITHMS.items() if not entry.needs_calibration]
            raise EdgelmError(f"int4 algorithm {self.name} needs calibration data; pass --data or use {'/'.join(free)}")
        if getattr(options, "finer_blocks_mb", 0) and not self.needs_calibration:
            calibrated = [name for name, entry in INT4_ALGORITHMS.items() if entry.needs_calibration]
            raise EdgelmError(f"int4 finer_blocks_mb measures errors on calibration data; use {'/'.join(calibrated)}, not {self.name}")
        for key, size in self._block_sizes(options).items():
            if not self.blocks.fits(size):
                raise EdgelmError(f"int4 algorithm {self.name}: {key} {size} is off its block grid; use {self.blocks.rule}")

    def _block_sizes(self, options) -> dict[str, int]:
        sizes = {"block_size": options.block_size}
        if self.table_block_size and options.table_block_size is not None:
            sizes["table_block_size"] = options.table_block_size
        return sizes


INT4_ALGORITHMS: Registry[Int4Algorithm] = Registry("int4 algorithm", __name__)


def int4_algorithm(name: str, summary: str, **declared) -> Callable:
    """Decorator: register the decorated `quantize(job) -> model` as int4 algorithm `name`."""

    def register(quantize: Callable[[Int4Job], Any]) -> Callable[[Int4Job], Any]:
        INT4_ALGORITHMS.register(name, Int4Algorithm(name, summary, quantize, **declared))
        return quantize

    return register


def summaries() -> str:
    """'name (summary), ...' for every registered algorithm (the quantize stage's help)."""
    return ", ".join(f"{name} ({entry.summary})" for name, entry in INT4_ALGORITHMS.items())
