"""int4 'affine': min/max blocks with float offsets (edgelm.techniques.quantize.affine). A tied table shares the
LM head's 4 bits *and* its offsets, or is not shared at all; both may take their own `table_block_size`."""

from __future__ import annotations

from edgelm.techniques.quantize.int4 import int4_algorithm


def share_bits_and_offsets(model, tied, options) -> bool:
    from edgelm.techniques.quantize.affine import can_tie_offsets, tie_offsets
    from edgelm.techniques.quantize.tied import tie_to_lm_head

    block = options.table_block_size or options.block_size
    if not can_tie_offsets(model, tied):  # checked first: the table must not be shared without its offsets
        return False
    return tie_to_lm_head(model, tied, block) and tie_offsets(model, tied, block)


@int4_algorithm("affine", "min/max blocks with float offsets, exact on GGUF Q4 weights", tie=share_bits_and_offsets,
                table_block_size=True)
def quantize(job):
    from edgelm.techniques.quantize.affine import affine_matmuls

    options = job.options
    head = [job.tied.lm_head] if job.tied and options.table_block_size else []
    affine_matmuls(job.model, options.block_size, options.accuracy_level, [*options.exclude, *head])
    if head:
        affine_matmuls(job.model, options.table_block_size, options.accuracy_level, options.exclude, only=head)
    return job.model
