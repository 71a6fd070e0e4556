"""ORT Mobile: convert model.onnx to model.ort as onnxruntime's own converter does ("Fixed" style) and keep
the required-operators config that a reduced onnxruntime build (build.py --include_ops_by_config) needs.

ORT's graph optimisations run ahead of time, so the app does no graph work at load. target_platform "arm" lets
int8 QDQ groups stay fusable on ARM CPUs (phones); the file still runs on x86, which is how parity checks it here.
The one difference from `convert_onnx_models_to_ort`: where constant folding would store a weight twice (the int4
tied table's Reshape view for the embedding lookup) or as float32 (int8 weights behind a DequantizeLinear), it is
left out (SmolLM2 int4: 93 MB .ort instead of 107 MB from the 90 MB .onnx).
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from edgelm.core.errors import EdgelmError

ORT_FILE = "model.ort"
OPS_CONFIG = "model.required_operators.config"


@dataclass
class OrtExport:
    path: Path
    config_path: Path
    operators: dict[str, dict[str, list[str]]]  # domain -> opset -> op types
    target_platform: str

    def manifest_entry(self) -> dict:
        return {"file": self.path.name, "required_operators_config": self.config_path.name,
                "optimization_style": "Fixed", "target_platform": self.target_platform, "operators": self.operators,
                "operator_count": sum(len(ops) for by_opset in self.operators.values() for ops in by_opset.values())}


def folding_would_copy_weights(onnx_path: Path) -> bool:
    """True when constant folding would store a second copy of a weight: a Reshape view of an initializer that
    another node reads too (the int4 tied table, shared by the LM head and the embedding lookup), or a
    DequantizeLinear of a stored initializer outside any QDQ group (no QuantizeLinear in the graph)."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    inits = {t.name for t in model.graph.initializer}
    readers: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    qdq = any(n.op_type == "QuantizeLinear" for n in model.graph.node)
    return any(n.input and n.input[0] in inits and (n.op_type == "Reshape" and readers[n.input[0]] > 1
                                                     or n.op_type == "DequantizeLinear" and not qdq)
               for n in model.graph.node)


def _convert_fixed(onnx_path: Path, ort_path: Path, cfg_path: Path, target_platform: str, disabled: list[str]) -> None:
    """What `convert_onnx_models_to_ort` does for the Fixed style (same session settings), with `disabled` graph
    optimizers left out."""
    import onnxruntime as ort
    from onnxruntime.tools.ort_format_model import create_config_from_models

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(ort_path)
    options.add_session_config_entry("session.save_model_format", "ORT")
    options.add_session_config_entry("session.qdqisint8allowed", "1" if target_platform == "arm" else "0")
    # the converting session never runs, so its pre-packed copies of the weights are pure overhead: without them
    # a 2-layer Qwen2.5-0.5B cut (664 MB) converts at 1.3 GB peak RSS instead of 2.5 GB (7 s instead of 11 s),
    # and the .ort's logits are bitwise the same (pre-packed buffers are not saved unless asked)
    options.add_session_config_entry("session.disable_prepacking", "1")
    disabled = disabled + (["NchwcTransformer"] if target_platform != "amd64" else [])  # as the converter
    ort_path.parent.mkdir(parents=True, exist_ok=True)
    ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"], disabled_optimizers=disabled)
    create_config_from_models([ort_path], cfg_path, False)


def convert_to_ort(onnx_path: Path, out_dir: Path, target_platform: str = "arm") -> OrtExport:
    onnx_path, out_dir = Path(onnx_path), Path(out_dir)
    tmp = out_dir / ".ort-convert"
    shutil.rmtree(tmp, ignore_errors=True)
    logging.getLogger("ort_format_model.utils").setLevel(logging.WARNING)
    try:
        produced_ort, produced_cfg = tmp / (onnx_path.stem + ".ort"), tmp / (onnx_path.stem + ".required_operators.config")
        disabled = ["ConstantFolding"] if folding_would_copy_weights(onnx_path) else []
        _convert_fixed(onnx_path, produced_ort, produced_cfg, target_platform, disabled)
        if not produced_ort.is_file():
            raise EdgelmError(f"{onnx_path}: onnxruntime's ORT converter produced no .ort file")
        ort_path, cfg_path = out_dir / ORT_FILE, out_dir / OPS_CONFIG
        produced_ort.replace(ort_path)
        _write_config(produced_cfg, cfg_path)
    except EdgelmError:
        raise
    except Exception as exc:  # the converter raises plain exceptions for unsupported graphs
        raise EdgelmError(f"{onnx_path}: conversion to ORT format failed ({str(exc).splitlines()[0][:200]})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return OrtExport(ort_path, cfg_path, parse_ops_config(cfg_path), target_platform)


def _write_config(produced: Path, target: Path) -> None:
    """Same config, minus the converter's comment lines that name its temporary absolute paths."""
    lines = [ln for ln in produced.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    target.write_text(f"# required operators of {ORT_FILE} (for a reduced onnxruntime build)\n" + "\n".join(lines) + "\n")


def parse_ops_config(path: Path) -> dict[str, dict[str, list[str]]]:
    """`domain;opset;Op1,Op2` lines -> {domain: {opset: [ops]}}."""
    ops: dict[str, dict[str, list[str]]] = {}
    for line in Path(path).read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        domain, opset, names = line.split(";")[:3]
        ops.setdefault(domain, {})[opset] = sorted(n for n in names.split(",") if n)
    return ops
