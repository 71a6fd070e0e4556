"""ExecuTorch: lower to XNNPACK and write model.pte (extra `mobile`; absent executorch -> one line saying so).

Encoders: torch.export of `task_module(bundle)` with bounded dynamic batch/sequence (XNNPACK needs upper
bounds). Decoders: transformers' ExecuTorch integration (`TorchExportableModuleForDecoderOnlyLM`), a static
KV cache of `max_cache_len` positions held inside the program; inputs are (input_ids, cache_position).
Which ops XNNPACK took and which stayed on the portable CPU kernels is recorded for the manifest.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgelm.core.errors import EdgelmError

PTE_FILE = "model.pte"
MAX_BATCH = 16
MAX_SEQUENCE = 512
DECODER_CACHE_LEN = 256


@dataclass
class PteExport:
    path: Path
    delegation: dict
    inputs: list[str]
    static_cache: dict | None = None
    extra: dict = field(default_factory=dict)

    def input_specs(self) -> list:
        from edgelm.export.manifest import TensorSpec

        if self.static_cache:
            return [TensorSpec(name="input_ids", dtype="int64", shape=[1, "sequence"]),
                    TensorSpec(name="cache_position", dtype="int64", shape=["sequence"])]
        return [TensorSpec(name=n, dtype="int64", shape=["batch", "sequence"]) for n in self.inputs]

    def manifest_entry(self) -> dict:
        entry = {"file": self.path.name, "backend": "XnnpackBackend", "method": "forward", "inputs": self.inputs,
                 **self.delegation}
        if self.static_cache:
            entry["static_kv_cache"] = self.static_cache
        return entry


def require_executorch() -> None:
    if importlib.util.find_spec("executorch") is None:
        raise EdgelmError("--format pte needs ExecuTorch, which is not installed; pip install 'edgelm[mobile]'")


def export_pte(bundle, out_dir: Path) -> PteExport:
    require_executorch()
    if bundle.task == "causal-lm" and bundle.extra.get("prompt_tuning"):
        raise EdgelmError(f"{bundle.source}: .pte of a prompt-tuned decoder is not supported (its static cache "
                          "cannot carry the virtual tokens yet); export --format onnx ort, or fine-tune with lora")
    if bundle.task == "causal-lm":
        program, inputs, cache = _decoder_program(bundle)
    else:
        program, inputs, cache = _encoder_program(bundle), _encoder_inputs(bundle), None
    edge, delegation = _lower(program, bundle.source)
    path = Path(out_dir) / PTE_FILE
    path.write_bytes(edge.to_executorch(_backend_config(cache is not None)).buffer)
    return PteExport(path, delegation, inputs, cache)


def _backend_config(has_cache: bool):
    from executorch.exir import ExecutorchBackendConfig
    from executorch.exir.passes.init_mutable_pass import InitializedMutableBufferPass

    # a mutated buffer is serialised without data unless asked: store the KV cache zeroed, so masked-out
    # slots can never hold NaN garbage that 0-weight attention would still propagate
    return ExecutorchBackendConfig(passes=[InitializedMutableBufferPass(["cache"])] if has_cache else [])


def _encoder_inputs(bundle) -> list[str]:
    from edgelm.models.tasks import model_input_names

    return model_input_names(bundle)


def _encoder_program(bundle):
    import torch

    from edgelm.export.onnx import encoder_example, match_signature

    module, names, args = encoder_example(bundle)
    limit = getattr(bundle.model.config, "max_position_embeddings", None) or MAX_SEQUENCE
    batch = torch.export.Dim("batch", max=MAX_BATCH)
    seq = torch.export.Dim("sequence", max=min(int(limit), MAX_SEQUENCE))
    dynamic = match_signature(module, names, {n: {0: batch, 1: seq} for n in names})
    return _trace(lambda: torch.export.export(module, args, dynamic_shapes=dynamic, strict=False), bundle.source)


def _decoder_program(bundle):
    import torch
    from transformers.integrations.executorch import TorchExportableModuleForDecoderOnlyLM

    limit = getattr(bundle.model.config.get_text_config(), "max_position_embeddings", None) or DECODER_CACHE_LEN
    cache_len = min(int(limit), DECODER_CACHE_LEN)
    with _static_cache_generation_config(bundle.model):
        exportable = TorchExportableModuleForDecoderOnlyLM(bundle.model, batch_size=1, max_cache_len=cache_len)
    seq = torch.export.Dim("sequence", max=cache_len - 1)
    ids, positions = torch.tensor([[1, 2, 3]], dtype=torch.long), torch.arange(3, dtype=torch.long)
    program = _trace(lambda: exportable.export(input_ids=ids, cache_position=positions,
                                               dynamic_shapes={"input_ids": {1: seq}, "cache_position": {0: seq}}),
                   bundle.source)  # strict=False trips aot_stage2_export on the cache's buffer mutation
    return program, ["input_ids", "cache_position"], {"max_cache_len": cache_len, "batch_size": 1}


@contextlib.contextmanager
def _static_cache_generation_config(model):
    """The integration reads `generation_config.cache_implementation`; set it on a copy, never on the input."""
    original = model.generation_config
    patched = copy.deepcopy(original)
    patched.cache_implementation, patched.use_cache = "static", True
    model.generation_config = patched
    try:
        yield
    finally:
        model.generation_config = original


def _trace(fn, source: str):
    from edgelm.export.onnx import describe_failure

    try:
        return fn()
    except Exception as exc:  # torch.export failures come in many types; all become one line
        raise EdgelmError(f"{source}: torch.export cannot trace this model for ExecuTorch: {describe_failure(exc)}") from None


def _lower(program, source: str):
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    try:
        edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
    except Exception as exc:
        raise EdgelmError(f"{source}: lowering to ExecuTorch/XNNPACK failed ({str(exc).splitlines()[0][:200]})") from None
    return edge, delegation_summary(edge.exported_program().graph_module)


def delegation_summary(graph_module) -> dict:
    """Ops inside XNNPACK delegate blobs vs ops left to portable kernels (counted per op name)."""
    from executorch.devtools.backend_debug import get_delegation_info

    info = get_delegation_info(graph_module)
    delegated, portable = Counter(), Counter()
    for op, row in info.delegation_by_operator.items():
        if op == "getitem" or op.startswith("sym_"):  # tuple unpacking and shape bookkeeping, not kernels
            continue
        if row.delegated:
            delegated[op] += row.delegated
        if row.non_delegated:
            portable[op] += row.non_delegated
    return {"num_delegated_nodes": info.num_delegated_nodes, "num_non_delegated_nodes": info.num_non_delegated_nodes,
            "num_delegate_blobs": info.num_delegated_subgraphs,
            "delegated_ops": dict(sorted(delegated.items())), "non_delegated_ops": dict(sorted(portable.items()))}


# --- running a .pte ----------------------------------------------------------------------------------------------
def _load_method(path: Path):
    require_executorch()
    from executorch.runtime import Runtime

    return Runtime.get().load_program(str(path)).load_method("forward")


def pte_runner(path: Path):
    """feeds {name: array} (in the program's input order) -> list of numpy outputs."""
    import torch

    method = _load_method(path)

    def run(feeds):
        outputs = method.execute([torch.from_numpy(np.ascontiguousarray(v)) for v in feeds.values()])
        return [o.numpy() for o in outputs]

    return run


class PteCausalLM:
    """prefill/decode/generate over a static-cache .pte, mirroring edgelm.models.generate.OnnxCausalLM (batch 1)."""

    def __init__(self, path: Path):
        self.method = _load_method(path)

    def _run(self, ids: np.ndarray, start: int) -> np.ndarray:
        import torch

        ids_t = torch.from_numpy(np.ascontiguousarray(ids, dtype=np.int64))
        positions = torch.arange(start, start + ids.shape[1], dtype=torch.long)
        return self.method.execute([ids_t, positions])[0].numpy()

    def prefill(self, input_ids):
        ids = np.asarray(input_ids).reshape(1, -1)
        return self._run(ids, 0), ids.shape[1]

    def decode(self, next_id, position: int):
        return self._run(np.asarray(next_id).reshape(1, 1), position), position + 1

    def generate(self, input_ids, max_new_tokens: int, eos_token_id: int | None = None, return_logits: bool = False):
        logits, position = self.prefill(input_ids)
        tokens, steps = [], []
        last = logits[0, -1]
        for _ in range(max_new_tokens):
            steps.append(last)
            tokens.append(int(np.argmax(last)))
            if eos_token_id is not None and tokens[-1] == eos_token_id:
                break
            logits, position = self.decode(tokens[-1], position)
            last = logits[0, -1]
        return (tokens, steps) if return_logits else tokens
