"""ORT Mobile: convert model.onnx to model.ort with onnxruntime's own converter and keep the
required-operators config that a reduced onnxruntime build (build.py --include_ops_by_config) needs.

The converter applies ORT's graph optimisations ahead of time ("Fixed" style), so the app does no graph work
at load. target_platform "arm" lets int8 QDQ groups stay fusable on ARM CPUs (phones); the file still runs on
x86, which is how parity checks it here.
"""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from edgelm.errors import EdgelmError

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


def convert_to_ort(onnx_path: Path, out_dir: Path, target_platform: str = "arm") -> OrtExport:
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

    onnx_path, out_dir = Path(onnx_path), Path(out_dir)
    tmp = out_dir / ".ort-convert"
    shutil.rmtree(tmp, ignore_errors=True)
    logging.getLogger("ort_format_model.utils").setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # converter progress chatter; stdout stays clean for --json
            convert_onnx_models_to_ort(onnx_path, output_dir=tmp, optimization_styles=[OptimizationStyle.Fixed],
                                       target_platform=target_platform)
        produced_ort, produced_cfg = tmp / (onnx_path.stem + ".ort"), tmp / (onnx_path.stem + ".required_operators.config")
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
