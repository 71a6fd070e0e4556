"""A plain torch.nn.Module as an edgelm model: no HF config or tokenizer, called positionally with the example
inputs its user gives. `ModuleSpec` records how to call it; the export, quantize and bench stages read it (and,
from disk, the example inputs saved beside the artifact as EXAMPLE_INPUTS_FILE)."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path

from edgelm.core.errors import EdgelmError

MODULE_TASK = "module"  # the bundle task of a plain nn.Module
EXAMPLE_INPUTS_FILE = "example_inputs.npz"  # a module export's example inputs (parity, quantize, bench feeds)
NEEDS = "a plain torch.nn.Module needs"


@dataclass
class ModuleSpec:
    """How to call a plain nn.Module: positional example tensors, their ONNX names, the output names and the
    dynamic axes ({tensor name: {axis: dim name}}, inputs and outputs alike)."""

    example_inputs: tuple
    input_names: list[str]
    output_names: list[str]
    dynamic_axes: dict[str, dict[int, str]] = field(default_factory=dict)

    def describe(self) -> dict:
        """The JSON-able part (edgelm.json, manifest preprocessing); the tensors go to EXAMPLE_INPUTS_FILE."""
        return {"input_names": self.input_names, "output_names": self.output_names,
                "dynamic_axes": {k: {str(a): d for a, d in v.items()} for k, v in self.dynamic_axes.items()}}

    def feeds(self) -> dict:
        """The example inputs as numpy arrays by input name (what an ONNX session is fed)."""
        return {n: t.detach().cpu().numpy() for n, t in zip(self.input_names, self.example_inputs)}


def module_spec(module, example_inputs, input_names=None, output_names=None, dynamic_axes=None) -> ModuleSpec:
    """Check the module runs on its example inputs and fill in the names it leaves out."""
    import torch

    if not isinstance(module, torch.nn.Module):
        raise EdgelmError(f"model: expected a path, a model name or a torch.nn.Module, got {type(module).__name__}")
    args = _as_tuple(example_inputs)
    names = list(input_names or _forward_names(module, len(args)))
    outputs = flat_outputs(call(module, args))
    out_names = list(output_names or [f"output_{i}" for i in range(len(outputs))])
    _check_counts(names, args, "input_names", "example_inputs")
    _check_counts(out_names, outputs, "output_names", "outputs the module returns")
    axes = _normalise_axes(dynamic_axes or {}, names + out_names)
    return ModuleSpec(args, names, out_names, axes)


def _as_tuple(example_inputs) -> tuple:
    import torch

    if example_inputs is None:
        raise EdgelmError(f"{NEEDS} example_inputs=(tensor, ...) to trace it (the positional arguments of its forward)")
    args = (example_inputs,) if isinstance(example_inputs, torch.Tensor) else tuple(example_inputs)
    if not args or not all(isinstance(a, torch.Tensor) for a in args):
        raise EdgelmError(f"{NEEDS} example_inputs as a tensor or a tuple of tensors")
    return args


def _forward_names(module, n: int) -> list[str]:
    params = [p for p in inspect.signature(module.forward).parameters.values()
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return [p.name for p in params[:n]] + [f"input_{i}" for i in range(len(params), n)]


def call(module, args: tuple):
    """The module's outputs on `args` (no grad); an exception in its forward is one line."""
    import torch

    try:
        with torch.no_grad():
            return module(*args)
    except Exception as exc:  # the user's forward can raise anything
        raise EdgelmError(f"{type(module).__name__}: forward fails on example_inputs "
                          f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None


def flat_outputs(out) -> list:
    """Tensors of a forward's result in order: a tensor, or tuples / lists / dicts of them."""
    import torch

    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (tuple, list)):
        return [t for item in out for t in flat_outputs(item)]
    raise EdgelmError(f"module outputs must be tensors (or tuples/dicts of them), got {type(out).__name__}")


def _check_counts(names: list[str], values, what: str, of: str) -> None:
    if len(names) != len(values):
        raise EdgelmError(f"{what}: {len(names)} names for {len(values)} {of}")
    if len(set(names)) != len(names):
        raise EdgelmError(f"{what}: names must be unique, got {names}")


def _normalise_axes(dynamic_axes: dict, known: list[str]) -> dict[str, dict[int, str]]:
    """{name: {axis: dim}} or torch.onnx's {name: [axis, ...]} (dims named name_axis)."""
    unknown = sorted(set(dynamic_axes) - set(known))
    if unknown:
        raise EdgelmError(f"dynamic_axes: {unknown} are not input or output names ({', '.join(known)})")
    return {name: ({int(a): str(d) for a, d in axes.items()} if isinstance(axes, dict)
                   else {int(a): f"{name}_{a}" for a in axes}) for name, axes in dynamic_axes.items()}


def varied_inputs(spec: ModuleSpec) -> tuple | None:
    """The example inputs with every dynamic input dim one longer (values taken from the example itself, so
    token ids stay in range): a second parity input that proves the dynamic axes work. None when none."""
    import torch

    sizes = {dim: t.shape[axis] + 1 for name, t in zip(spec.input_names, spec.example_inputs)
             for axis, dim in spec.dynamic_axes.get(name, {}).items()}
    if not sizes:
        return None
    varied = []
    for name, tensor in zip(spec.input_names, spec.example_inputs):
        for axis, dim in spec.dynamic_axes.get(name, {}).items():
            index = torch.arange(sizes[dim]) % tensor.shape[axis]
            tensor = tensor.index_select(axis, index)
        varied.append(tensor)
    return tuple(varied)


def save_example_inputs(spec: ModuleSpec, folder: Path) -> Path:
    import numpy as np

    path = Path(folder) / EXAMPLE_INPUTS_FILE
    np.savez(path, **spec.feeds())
    return path


def load_example_inputs(folder: Path) -> dict:
    """{input name: array} saved beside a module export; one line when there are none."""
    import numpy as np

    path = Path(folder) / EXAMPLE_INPUTS_FILE
    if not path.is_file():
        raise EdgelmError(f"{folder}: no {EXAMPLE_INPUTS_FILE}; export the module with edgelm.export(module, example_inputs=...)")
    with np.load(path) as npz:
        return {k: npz[k] for k in npz.files}
