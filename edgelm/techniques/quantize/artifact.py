"""The quantized export folder: companion files copied from the float export, manifest updated (quantization,
parity, re-hashed files), .ort re-converted when the input had one."""

from __future__ import annotations

import shutil
from pathlib import Path

COMPANIONS = ("tokenizer*.json", "tokenizer.model", "vocab.*", "merges.txt", "special_tokens_map.json", "added_tokens.json",
              "config.json", "generation_config.json", "chat_template.*", "*.jinja", "ort_config.*", "*.config")


def copy_companions(src_dir: Path, dst_dir: Path) -> list[Path]:
    """Tokenizer / config files next to the float model (never the model files or stage bookkeeping)."""
    copied = []
    for pattern in COMPANIONS:
        for path in sorted(Path(src_dir).glob(pattern)):
            if path.is_file() and not (dst_dir / path.name).exists():
                shutil.copy2(path, dst_dir / path.name)
                copied.append(dst_dir / path.name)
    return copied


def write_manifest(src_dir: Path, dst_dir: Path, task: str, quantization: dict, parity: dict, source: str = "",
                   sections: dict | None = None) -> Path:
    """The export manifest carried over with `quantization` and the quantized parity figures, files re-hashed.
    Without an export manifest (a bare model.onnx) a minimal one of the same schema is written."""
    from edgelm.export.manifest import MANIFEST_FILE, Manifest, refresh_file_hashes

    src = Path(src_dir) / MANIFEST_FILE
    manifest = Manifest.load(src_dir) if src.is_file() else Manifest(task=task, source=source or str(src_dir))
    manifest.quantization = quantization
    manifest.parity = {k: v for k, v in manifest.parity.items() if k not in ("ort", "pte")}  # those files are not carried
    manifest.parity.update(parity)
    manifest.executorch = manifest.ort_mobile = None  # the float export's entries describe files not carried over
    for name, value in (sections or {}).items():  # executorch / ort_mobile entries of the re-made files
        setattr(manifest, name, value)
    manifest.files = {}
    manifest.save(dst_dir)
    names = [p.name for p in Path(dst_dir).iterdir() if p.is_file() and p.name not in BOOKKEEPING and not p.name.startswith(".")]
    refresh_file_hashes(dst_dir, names)
    return Path(dst_dir) / MANIFEST_FILE


BOOKKEEPING = ("manifest.json", "edgelm.json", "metrics.json")


def convert_ort(onnx_path: Path, out_dir: Path):
    """Re-convert .ort with the export package's converter (and check that ONNX Runtime loads it)."""
    from edgelm.export.ort_mobile import convert_to_ort

    converted = convert_to_ort(onnx_path, out_dir)
    _require_loadable(Path(converted.path))
    return converted


def _require_loadable(path: Path) -> None:
    """A converter can write an .ort that ORT itself refuses (e.g. a tensor type the format lacks): fail here."""
    import onnxruntime as ort

    from edgelm.core.errors import EdgelmError

    try:
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise EdgelmError(f"{path}: the quantized model converts to .ort but ONNX Runtime cannot load it "
                          f"({str(exc).splitlines()[0][:200]}); quantize with --no-quantize-embedding or drop ort") from None
