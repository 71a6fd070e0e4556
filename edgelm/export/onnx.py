"""ONNX export through `torch.onnx.export(..., dynamo=True)` — one generic path, no per-architecture tables.

Encoders export `task_module(bundle)` (logits or pooled embeddings) with dynamic batch and sequence. Decoders
export one graph for prefill and decode: the model's own forward with a DynamicCache built from flat
`past_key_values.{i}.key|value` inputs, returning `logits` and `present.{i}.key|value`. The KV layout (layers,
kv heads, head dim) is read from what the model actually returns, so GQA and odd head dims need no table.
"""

from __future__ import annotations

import functools
import inspect
import logging
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from edgelm.core.errors import EdgelmError
from edgelm.export.manifest import KVCache, TensorSpec

ONNX_FILE = "model.onnx"
EXTERNAL_DATA_ABOVE_BYTES = 256 * 2**20  # weights larger than this go to model.onnx.data
EXAMPLE_TEXTS = ["the movie was good and the acting was great .", "a boring film ."]


@dataclass
class OnnxExport:
    path: Path
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    kv_cache: KVCache | None = None
    seconds: float = 0.0  # trace, translate and save; the fusions' own time is in optimization["seconds"]
    files: list[Path] = field(default_factory=list)
    optimization: dict | None = None  # what optimize.optimize_model did, when export_onnx(fuse=True)


def export_onnx(bundle, out_dir: Path, *, external_data: bool | None = None, fuse: bool = False) -> OnnxExport:
    """Write `out_dir/model.onnx` (+ `.data`) for the bundle's task; returns its IO description.

    The graph is cleaned by onnxscript's optimizer (constant folding, redundant ops) and saved; with `fuse` the
    saved graph then gets the ORT fusions and the attention / LayerNorm rewrites (`optimize.optimize_onnx`), each
    one kept only when the rewritten graph passes its check against the graph before it."""
    import torch

    from edgelm.export.optimize import without_slow_rules

    out_dir = Path(out_dir)
    path = out_dir / ONNX_FILE
    started = time.time()
    kv = None
    if bundle.task == "causal-lm":
        module, args, dynamic, names, dim_names, kv = _decoder_graph(bundle)
    elif bundle.module is not None:
        module, args, dynamic, names, dim_names = _module_graph(bundle)
        fuse = False  # the ORT fusions match transformer blocks; a plain module gets onnxscript's clean-up only
    else:
        module, args, dynamic, names, dim_names = _encoder_graph(bundle)
    in_names, out_names = names
    with _quiet_exporter():
        try:
            program = torch.onnx.export(module, args, dynamo=True, dynamic_shapes=dynamic, input_names=in_names,
                                        output_names=out_names, optimize=False, verbose=False, report=False)
        except Exception as exc:  # torch.export failures come in many types; all become one line
            if bundle.module is not None:
                return _torchscript_module(bundle, path, started, describe_failure(exc))
            raise EdgelmError(f"{bundle.source}: torch.export cannot trace this model: {describe_failure(exc)}") from None
        with without_slow_rules():
            program.optimize()
    _name_dims(program.model, dim_names)
    if external_data is None:
        external_data = _param_bytes(bundle.model) > EXTERNAL_DATA_ABOVE_BYTES
    for stale in (path, path.with_name(path.name + ".data")):
        stale.unlink(missing_ok=True)
    program.save(str(path), external_data=external_data)
    del program
    from edgelm.export.lstm import fold_lstm_file

    fold_lstm_file(path)  # LSTM gate reorders of the weights, computed once instead of on every run
    fixed = fixed_dims(path, bundle.module) if bundle.module is not None else None
    if fixed:
        return _torchscript_module(bundle, path, started, f"it fixed the dynamic dims {', '.join(fixed)}")
    optimization = None
    if fuse:
        from edgelm.export.optimize import optimize_onnx

        with _quiet_exporter():
            optimization = optimize_onnx(path, bundle)
    inputs, outputs = describe_io(path)
    files = [path] + ([path.with_name(path.name + ".data")] if external_data else [])
    seconds = time.time() - started - (optimization["seconds"] if optimization else 0.0)
    return OnnxExport(path, inputs, outputs, kv, round(seconds, 2), files, optimization)


# --- encoders ------------------------------------------------------------------------------------------------
def encoder_example(bundle):
    """(task module, input names, example args) for tracing an encoder on real, padded text."""
    import torch

    from edgelm.models.tasks import model_input_names, task_module

    names = model_input_names(bundle)
    enc = bundle.tokenizer(EXAMPLE_TEXTS, padding=True, return_tensors="pt")
    args = tuple(enc[n] if n in enc else torch.zeros_like(enc["input_ids"]) for n in names)
    return task_module(bundle), names, args


def _encoder_graph(bundle):
    import torch

    from edgelm.models.tasks import output_name

    module, names, args = encoder_example(bundle)
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence", max=_max_positions(bundle))
    dynamic = match_signature(module, names, {n: {0: batch, 1: seq} for n in names})
    out = output_name(bundle.task)
    dim_names = {n: ["batch", "sequence"] for n in names} | {out: ["batch", None]}
    return module, args, dynamic, (names, [out]), dim_names


def _max_positions(bundle) -> int | None:
    limit = getattr(bundle.model.config, "max_position_embeddings", None)
    return int(limit) if limit and limit > 8 else None


def match_signature(module, names, dynamic):
    """dynamic_shapes keyed by the forward's parameter names (they may differ from the ONNX input names)."""
    params = list(inspect.signature(module.forward).parameters)[: len(names)]
    return {p: dynamic[n] for p, n in zip(params, names)}


# --- plain modules ------------------------------------------------------------------------------------------
def _module_graph(bundle):
    """A plain nn.Module as its user described it (edgelm.models.plain.ModuleSpec): its example inputs, names and
    dynamic axes, one torch.export.Dim per dim name so inputs sharing a name share the symbol."""
    import torch

    spec = bundle.module
    _check_dynamic_sizes(spec)
    dims = {d: torch.export.Dim(d) for axes in spec.dynamic_axes.values() for d in axes.values()}
    dynamic = tuple({a: dims[d] for a, d in spec.dynamic_axes.get(n, {}).items()} or None for n in spec.input_names)
    dim_names = {n: [axes.get(i) for i in range(max(axes) + 1)] for n, axes in spec.dynamic_axes.items() if axes}
    return bundle.model.eval(), spec.example_inputs, dynamic, (spec.input_names, spec.output_names), dim_names


def _check_dynamic_sizes(spec) -> None:
    for name, tensor in zip(spec.input_names, spec.example_inputs):
        for axis, dim in spec.dynamic_axes.get(name, {}).items():
            if axis >= tensor.dim():
                raise EdgelmError(f"dynamic_axes: {name} has {tensor.dim()} dims, no axis {axis}")
            if tensor.shape[axis] < 2:
                raise EdgelmError(f"dynamic_axes: {name} axis {axis} ({dim}) is {tensor.shape[axis]} in example_inputs; "
                                  "torch.export fixes size-0/1 dims, so give an example of size >= 2 there")


def fixed_dims(path: Path, spec) -> list[str]:
    """Dynamic axes the exported graph came out with a fixed size on (torch.export specialises the sequence
    loop of nn.GRU / nn.LSTM, for one)."""
    inputs, outputs = describe_io(path)
    shapes = {t.name: t.shape for t in inputs + outputs}
    return [f"{name}[{axis}]" for name, axes in spec.dynamic_axes.items() for axis in axes
            if name in shapes and axis < len(shapes[name]) and isinstance(shapes[name][axis], int)]


def _torchscript_module(bundle, path: Path, started: float, reason: str) -> OnnxExport:
    """The TorchScript exporter, which keeps torch.onnx's dynamic_axes where torch.export could not; said in one line."""
    import torch

    from edgelm.core.ui import info

    spec = bundle.module
    info(f"{bundle.source}: torch.export could not keep the module dynamic ({reason[:160]}); "
         "exported with the TorchScript exporter instead")
    path.unlink(missing_ok=True)
    with _quiet_exporter():
        try:
            torch.onnx.export(bundle.model.eval(), spec.example_inputs, str(path), dynamo=False, input_names=spec.input_names,
                              output_names=spec.output_names, dynamic_axes=spec.dynamic_axes or None)
        except Exception as exc:  # the TorchScript tracer's failures are as varied as torch.export's
            raise EdgelmError(f"{bundle.source}: neither torch.export nor the TorchScript exporter can export this module: "
                              f"{describe_failure(exc)}") from None
    inputs, outputs = describe_io(path)
    return OnnxExport(path, inputs, outputs, None, round(time.time() - started, 2), [path], None)


# --- decoders ------------------------------------------------------------------------------------------------
def _decoder_graph(bundle):
    import torch

    from edgelm.models.text_tasks import prefix_cache, virtual_tokens

    prompt = virtual_tokens(bundle)
    module = DecoderWithCache(bundle.model, prefix_cache(bundle.model, prompt) if prompt is not None else None).eval()
    batch_size, seq_len, past_len = 2, 3, 4
    ids = torch.randint(0, bundle.model.config.get_text_config().vocab_size, (batch_size, seq_len))
    mask = torch.ones(batch_size, past_len + seq_len, dtype=torch.long)
    positions = torch.arange(past_len, past_len + seq_len).expand(batch_size, seq_len)
    kv = _kv_layout(bundle.model)
    past = [tuple(torch.randn(batch_size, kv.num_kv_heads, past_len, kv.head_dim) for _ in range(2))
            for _ in range(kv.num_layers)]
    batch, seq, past_seq = torch.export.Dim("batch"), torch.export.Dim("sequence"), torch.export.Dim("past_sequence")
    dynamic = {"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: torch.export.Dim.AUTO},
               "position_ids": {0: batch, 1: seq}, "past": [({0: batch, 2: past_seq},) * 2 for _ in range(kv.num_layers)]}
    in_names = ["input_ids", "attention_mask", "position_ids"]
    past_names = [n for i in range(kv.num_layers) for n in kv.past_names(i)]
    present_names = [n for i in range(kv.num_layers) for n in kv.present_names(i)]
    dim_names = {"input_ids": ["batch", "sequence"], "position_ids": ["batch", "sequence"],
                 "attention_mask": ["batch", "total_sequence"], "logits": ["batch", "sequence", None]}
    dim_names |= {n: ["batch", None, "past_sequence", None] for n in past_names}
    dim_names |= {n: ["batch", None, "total_sequence", None] for n in present_names}
    names = (in_names + past_names, ["logits"] + present_names)
    return module, (ids, mask, positions, past), dynamic, names, dim_names, kv


@functools.cache
def _decoder_module_class():
    from torch import nn

    class DecoderWithCache(nn.Module):
        """forward(input_ids, attention_mask, position_ids, past) -> (logits, *presents), cache as plain tensors.

        With `prefix` (prompt tuning's virtual tokens as the KV cache they leave) the graph carries them as
        constants: it puts them in front of every past, shifts positions and the mask by their count and cuts
        them off the presents, so callers see the plain decoder contract and never handle virtual tokens."""

        def __init__(self, model, prefix=None):
            super().__init__()
            self.model = model
            self.n_prefix = 0 if prefix is None else prefix[0][0].shape[2]
            for i, (key, value) in enumerate(prefix or []):
                self.register_buffer(f"prefix_key_{i}", key)
                self.register_buffer(f"prefix_value_{i}", value)

        def forward(self, input_ids, attention_mask, position_ids, past):
            import torch
            from transformers import DynamicCache

            n, batch = self.n_prefix, input_ids.shape[0]
            cache = DynamicCache()  # no config: every layer keeps full length, so presents are past + new
            for i, (key, value) in enumerate(past):
                if n:
                    key = torch.cat([getattr(self, f"prefix_key_{i}").expand(batch, -1, -1, -1), key], dim=2)
                    value = torch.cat([getattr(self, f"prefix_value_{i}").expand(batch, -1, -1, -1), value], dim=2)
                cache.update(key, value, i)
            if n:
                attention_mask = torch.cat([attention_mask.new_ones(batch, n), attention_mask], dim=1)
                position_ids = position_ids + n
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                             past_key_values=cache, use_cache=True)
            presents = [t[:, :, n:] for layer in out.past_key_values.layers for t in (layer.keys, layer.values)]
            return (out.logits, *presents)

    return DecoderWithCache


def DecoderWithCache(model, prefix=None):  # noqa: N802 - builds the nn.Module subclass lazily (torch imported inside)
    return _decoder_module_class()(model, prefix)


def _kv_layout(model) -> KVCache:
    """Layers, kv heads and head dim as the model really caches them (one tiny forward, no config tables)."""
    import torch

    with torch.no_grad():
        out = model(input_ids=torch.zeros(1, 2, dtype=torch.long), use_cache=True)
    layers = out.past_key_values.layers
    key = layers[0].keys
    return KVCache(num_layers=len(layers), num_kv_heads=key.shape[1], head_dim=key.shape[3],
                   dtype=str(key.dtype).replace("torch.", ""))


# --- graph IO -----------------------------------------------------------------------------------------------
def _name_dims(model, dim_names: dict[str, list[str | None]]) -> None:
    """Give the graph's symbolic dims readable names (batch, sequence, past_sequence, total_sequence)."""
    import onnx_ir as ir

    for value in list(model.graph.inputs) + list(model.graph.outputs):
        wanted = dim_names.get(value.name)
        if wanted is None or value.shape is None:
            continue
        dims = [w if (w is not None and not isinstance(d, int)) else d for d, w in zip(value.shape, wanted)]
        dims += list(value.shape)[len(wanted):]
        value.shape = ir.Shape(dims)


def describe_io(path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    import onnx
    from onnx import helper

    model = onnx.load(str(path), load_external_data=False)
    init_names = {i.name for i in model.graph.initializer}

    def spec(v):
        t = v.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim]
        return TensorSpec(name=v.name, dtype=str(helper.tensor_dtype_to_np_dtype(t.elem_type)), shape=dims)

    return [spec(v) for v in model.graph.input if v.name not in init_names], [spec(v) for v in model.graph.output]


def _param_bytes(model) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


# --- failures -----------------------------------------------------------------------------------------------
def describe_failure(exc: BaseException) -> str:
    """One line: where in the model code torch.export gave up, and why."""
    root = exc
    while root.__cause__ is not None or (root.__context__ is not None and not root.__suppress_context__):
        root = root.__cause__ or root.__context__
    where = _model_frame(root) or _model_frame(exc)
    message = next((ln.strip() for ln in str(root).splitlines() if ln.strip()), type(root).__name__)
    return f"{type(root).__name__} in {where}: {message[:300]}" if where else f"{type(root).__name__}: {message[:300]}"


def _model_frame(exc: BaseException) -> str | None:
    """The innermost traceback frame outside torch itself (the module code that failed to trace)."""
    frames = traceback.extract_tb(exc.__traceback__)
    for frame in reversed(frames):
        fname = frame.filename.replace("\\", "/")
        if "/torch/" in fname or "/onnxscript/" in fname or "/edgelm/export/" in fname or "/contextlib.py" in fname:
            continue
        return f"{frame.name} ({_short(fname)}:{frame.lineno})"
    return None


def _short(filename: str) -> str:
    for marker in ("site-packages/", "/work/"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return Path(filename).name


class _quiet_exporter:
    """The exporter logs progress and registry warnings; the CLI shows its own progress instead."""

    def __enter__(self):
        self.loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
        self.levels = [lg.level for lg in self.loggers]
        for lg in self.loggers:
            lg.setLevel(logging.ERROR)
        import warnings

        self.warnings = warnings.catch_warnings()
        self.warnings.__enter__()
        warnings.simplefilter("ignore")
        return self

    def __exit__(self, *exc):
        self.warnings.__exit__(*exc)
        for lg, level in zip(self.loggers, self.levels):
            lg.setLevel(level)
        return False
