"""ModelBundle: what flows between stages — a torch model and/or exported artifacts, tokenizer, task, history.

On disk a bundle is a folder with `edgelm.json` plus, when the torch model changed in this stage, the model
weights (safetensors) and tokenizer files. A stage that leaves the weights alone (export, bench) records a
reference to the folder that holds them instead of copying them. Paths are stored relative to the bundle
folder, so a stage folder renamed from its temp name keeps pointing at the right files. `ModelBundle.read`
reads the record back without weights; `edgelm.models.loading.load_bundle` loads the model and tokenizer too.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgelm.core.errors import EdgelmError
from edgelm.core.io import read_json, sha256_file
from edgelm.models.plain import MODULE_TASK, ModuleSpec, module_spec

BUNDLE_FILE = "edgelm.json"
BUNDLE_SCHEMA = 1
TASKS = ("sequence-classification", "feature-extraction", "causal-lm")


@dataclass
class ModelBundle:
    model: Any | None  # a transformers PreTrainedModel (float), or None for artifact-only bundles
    tokenizer: Any | None
    task: str
    source: str  # what the user asked for (built-in name, path, hub id)
    history: list[dict] = field(default_factory=list)
    artifacts: dict[str, Path] = field(default_factory=dict)  # format -> file, e.g. {"onnx": .../model.onnx}
    model_dir: Path | None = None  # where the current weights are saved; None = not saved since changed
    extra: dict[str, Any] = field(default_factory=dict)  # per-technique state that must survive save/load
    module: ModuleSpec | None = None  # set for a plain nn.Module bundle (task MODULE_TASK); its weights are never saved

    def __post_init__(self):
        if self.task not in TASKS + (MODULE_TASK,):
            raise EdgelmError(f"task {self.task!r} is not supported; use one of {', '.join(TASKS)}")

    @classmethod
    def for_module(cls, module, example_inputs, *, input_names=None, output_names=None, dynamic_axes=None,
                   source: str | None = None) -> "ModelBundle":
        """A bundle for a plain torch.nn.Module, called once on `example_inputs` to check it runs and to count
        its outputs. Names default to the forward's parameters and output_0, output_1, ..."""
        spec = module_spec(module, example_inputs, input_names, output_names, dynamic_axes)
        return cls(model=module.eval(), tokenizer=None, task=MODULE_TASK, source=source or type(module).__name__,
                   module=spec, extra={"module": spec.describe()})

    @property
    def is_module(self) -> bool:
        return self.task == MODULE_TASK

    # --- derivation (stages never mutate their input) ---------------------------------------------------
    def with_model(self, model, **changes) -> "ModelBundle":
        """A new bundle whose torch model differs: its weights must be saved again."""
        return self.derive(model=model, model_dir=None, **changes)

    def derive(self, **changes) -> "ModelBundle":
        fields = dict(
            model=self.model, tokenizer=self.tokenizer, task=self.task, source=self.source,
            history=copy.deepcopy(self.history), artifacts=dict(self.artifacts),
            model_dir=self.model_dir, extra=copy.deepcopy(self.extra), module=self.module,
        )
        fields.update(changes)
        return ModelBundle(**fields)

    def record(self, kind: str, config: dict) -> "ModelBundle":
        """Append a stage's resolved config to the history (returns self for chaining on a derived bundle)."""
        self.history.append({"kind": kind, "config": config})
        return self

    @property
    def labels(self) -> list[str] | None:
        if self.model is None or self.task != "sequence-classification":
            return None
        id2label = getattr(self.model.config, "id2label", None) or {}
        return [str(id2label[i]) for i in sorted(id2label)] if id2label else None

    # --- persistence -------------------------------------------------------------------------------------
    def save(self, directory: str | os.PathLike) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if self.model is not None and self.model_dir is None and not self.is_module:
            save_model(self.model, self.tokenizer, directory)
            self.model_dir = directory
        meta = {
            "schema_version": BUNDLE_SCHEMA,
            "task": self.task,
            "source": self.source,
            "history": self.history,
            "model_dir": _rel(self.model_dir, directory) if self.model_dir else None,
            "artifacts": {k: _rel(v, directory) for k, v in self.artifacts.items()},
            "extra": self.extra,
        }
        (directory / BUNDLE_FILE).write_text(json.dumps(meta, indent=2, default=str))
        return directory

    @classmethod
    def read(cls, directory: str | os.PathLike) -> "ModelBundle":
        """The bundle a folder's edgelm.json records, its artifacts checked, without model or tokenizer."""
        directory = Path(directory)
        meta = read_meta(directory / BUNDLE_FILE)
        verify_artifacts(directory, meta.get("artifacts", {}))
        model_dir = _abs(meta.get("model_dir"), directory)
        if model_dir is not None and not model_dir.is_dir():
            raise EdgelmError(f"{directory / BUNDLE_FILE}: model_dir {meta['model_dir']!r} does not exist (was a folder "
                              "it points to moved or deleted?); re-run the stage that made it")
        return cls(
            model=None, tokenizer=None, task=meta["task"], source=meta.get("source", str(directory)),
            history=meta.get("history", []),
            artifacts={k: _abs(v, directory) for k, v in meta.get("artifacts", {}).items()},
            model_dir=model_dir, extra=meta.get("extra", {}),
        )


def read_meta(meta_path: Path) -> dict:
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EdgelmError(f"{meta_path}: not a readable edgelm bundle ({exc}); re-run the stage that made it") from None
    _check_meta(meta, meta_path)
    return meta


def _check_meta(meta, meta_path: Path) -> None:
    """edgelm.json comes from disk: check its shape so a damaged file is one clear line, not a crash later."""
    expected = {"task": str, "source": str, "history": list, "model_dir": (str, type(None)), "artifacts": dict,
                "extra": dict}
    if not isinstance(meta, dict):
        raise EdgelmError(f"{meta_path}: not an edgelm bundle (expected a JSON object); re-run the stage that made it")
    if "task" not in meta:
        raise EdgelmError(f"{meta_path}: damaged edgelm bundle (no 'task'); re-run the stage that made it")
    for key, types in expected.items():
        if key in meta and not isinstance(meta[key], types):
            raise EdgelmError(f"{meta_path}: damaged edgelm bundle ({key!r} has the wrong type); re-run the stage that made it")
    if meta["task"] not in TASKS + (MODULE_TASK,):
        raise EdgelmError(f"{meta_path}: task {meta['task']!r} is not supported; use one of {', '.join(TASKS)}")
    if not all(isinstance(v, str) for v in meta.get("artifacts", {}).values()):
        raise EdgelmError(f"{meta_path}: damaged edgelm bundle (artifact paths must be strings)")


def verify_artifacts(directory: Path, artifacts: dict) -> None:
    """Artifacts listed in this folder's manifest.json must have the recorded size and sha256: a truncated or
    modified model.onnx is refused here in one line instead of failing deep inside a runtime."""
    manifest = read_json(directory / "manifest.json")
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict):
        return  # no manifest (or not ours): nothing recorded to check against
    for rel in artifacts.values():
        entry = files.get(rel)
        if not isinstance(entry, dict) or "sha256" not in entry:
            continue
        path = directory / rel
        if not path.is_file():
            raise EdgelmError(f"{path}: listed in manifest.json but missing; re-run the stage that made it")
        if entry.get("bytes") not in (None, path.stat().st_size):
            raise EdgelmError(f"{path}: {path.stat().st_size} bytes, manifest.json records {entry['bytes']}; "
                              "the file is truncated or was modified — re-run the stage that made it")
        if sha256_file(path) != entry["sha256"]:
            raise EdgelmError(f"{path}: sha256 differs from manifest.json; the file is corrupted or was modified — "
                              "re-run the stage that made it")


def content_fingerprint(bundle: ModelBundle) -> str:
    """sha256 of an in-memory model's weights (names, dtypes, shapes, bytes) and, for a plain module, its example
    inputs and names: the key it is resumed and cached under."""
    tensors = dict(bundle.model.state_dict())
    if bundle.module is not None:
        tensors |= {f"example_inputs:{n}": t for n, t in zip(bundle.module.input_names, bundle.module.example_inputs)}
    return tensors_fingerprint(tensors, bundle.task, bundle.module.describe() if bundle.module else None)


def tensors_fingerprint(tensors: dict, *extra) -> str:
    import hashlib

    import torch

    digest = hashlib.sha256(repr(extra).encode())
    for name, tensor in tensors.items():
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_model(model, tokenizer, directory: Path) -> None:
    """Save weights as safetensors (never pickle) and the tokenizer beside them."""
    model.save_pretrained(directory, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)


def is_bundle_dir(path: Path) -> bool:
    return (Path(path) / BUNDLE_FILE).is_file()


def _rel(path: Path, base: Path) -> str:
    return os.path.relpath(Path(path).resolve(), base.resolve())


def _abs(rel: str | None, base: Path) -> Path | None:
    if rel is None:
        return None
    p = Path(rel)
    return p if p.is_absolute() else (base / p).resolve()
