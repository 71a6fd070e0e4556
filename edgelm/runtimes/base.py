"""The uniform runner API: `open_runner(runtime, export_dir, threads=None).run(feeds) -> list[np.ndarray]`, for
benchmarks and for evaluation on any runtime. Absent runtimes say why (`unavailable(runtime)`), never fake.

A *target* is what gets run: an export folder (model.onnx / model.ort / model.pte, manifest.json, edgelm.json
whose model_dir points at the torch weights), any edgelm output folder, or a plain HF model folder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from edgelm.core.errors import EdgelmError
from edgelm.core.io import read_json
from edgelm.core.registry import Registry
from edgelm.core.metrics import files_mb
from edgelm.models.bundle import verify_artifacts
from edgelm.export.formats import FORMATS, with_sidecars

DEFAULT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass
class Target:
    """Paths of one thing to benchmark; JSON-able so a worker process can receive it."""

    name: str
    path: Path
    task: str
    files: dict[str, Path] = field(default_factory=dict)  # "onnx"/"ort"/"pte" -> file
    model_dir: Path | None = None  # torch weights (HF folder)
    input_names: list[str] | None = None  # model inputs in call order, from manifest.json when present
    manifest: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"name": self.name, "path": str(self.path), "task": self.task,
                "files": {k: str(v) for k, v in self.files.items()},
                "model_dir": str(self.model_dir) if self.model_dir else None,
                "input_names": self.input_names, "manifest": self.manifest}

    @classmethod
    def from_json(cls, data: dict) -> "Target":
        return cls(name=data["name"], path=Path(data["path"]), task=data["task"],
                   files={k: Path(v) for k, v in data["files"].items()},
                   model_dir=Path(data["model_dir"]) if data.get("model_dir") else None,
                   input_names=data.get("input_names"), manifest=data.get("manifest") or {})

    @property
    def tokenizer_dir(self) -> Path | None:
        for folder in (self.path, self.model_dir):
            if folder and any((folder / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt")):
                return folder
        return None


def resolve_target(path: str | Path, name: str | None = None) -> Target:
    """A Target from an export/edgelm folder (edgelm.json, manifest.json) or a plain HF model folder."""
    path = Path(path).expanduser().resolve()
    if not path.is_dir():
        raise EdgelmError(f"{path}: no such folder; pass an export folder (edgelm export ... -o OUT) or a model folder")
    manifest = read_manifest(path)
    meta = read_json(path / "edgelm.json")
    verify_artifacts(path, meta.get("artifacts") or {})  # a truncated/modified artifact: one line, exit 2
    files = {fmt: path / f.file for fmt, f in FORMATS.items() if (path / f.file).is_file()}
    for fmt, rel in (meta.get("artifacts") or {}).items():
        file = (path / rel).resolve()
        if fmt in FORMATS and file.is_file():
            files.setdefault(fmt, file)
    model_dir = (path / meta["model_dir"]).resolve() if meta.get("model_dir") else None
    if model_dir is None and (path / "config.json").is_file():
        model_dir = path
    task = manifest.get("task") or meta.get("task") or (_detect_task(model_dir) if model_dir else None)
    if task is None:
        raise EdgelmError(f"{path}: cannot tell the task (no manifest.json, edgelm.json or config.json); is it an export folder?")
    names = [i["name"] for i in manifest.get("inputs", []) if isinstance(i, dict) and "name" in i] or None
    return Target(name=name or path.name, path=path, task=task, files=files, model_dir=model_dir,
                  input_names=names, manifest=manifest)


def read_manifest(folder: Path) -> dict:
    """The folder's manifest.json as a dict ({} when there is none); a damaged one is one line naming the field."""
    from edgelm.core.records import Manifest

    if not (Path(folder) / Manifest.FILE).is_file():
        return {}
    Manifest.load(folder)  # refuses a manifest that is not JSON, not an object, or has a field of the wrong type
    return read_json(Path(folder) / Manifest.FILE)


def target_from_bundle(bundle, name: str, folder: Path | None = None) -> Target:
    """A Target for an in-memory bundle whose weights and artifacts are already on disk."""
    files = {fmt: Path(p) for fmt, p in bundle.artifacts.items() if fmt in FORMATS and Path(p).is_file()}
    base = folder or (next(iter(files.values())).parent if files else bundle.model_dir)
    manifest = read_manifest(Path(base)) if base else {}
    names = [i["name"] for i in manifest.get("inputs", []) if isinstance(i, dict) and "name" in i] or None
    return Target(name=name, path=Path(base), task=bundle.task, files=files, model_dir=bundle.model_dir,
                  input_names=names, manifest=manifest)




def _detect_task(model_dir: Path) -> str:
    from edgelm.models.loading import detect_task, load_config

    return detect_task(load_config(model_dir), model_dir)


class Runner:
    """One loaded model on one runtime. `run` takes numpy feeds by input name and returns numpy outputs."""

    runtime: str = ""
    threads: int | None = None
    input_names: list[str] = []

    def run(self, feeds: dict[str, Any]) -> list:
        raise NotImplementedError

    def generator(self):
        """An object with prefill(ids[1, n]) -> (next_token, state) and decode(token, state) -> (next_token,
        state), for causal-lm timing; raise EdgelmError with the reason where the runtime cannot generate."""
        raise EdgelmError(f"{self.runtime}: token generation is not supported on this runtime")

    def pick(self, feeds: dict) -> dict:
        missing = [n for n in self.input_names if n not in feeds]
        if missing:
            more = f" and {len(missing) - 4} more" if len(missing) > 4 else ""
            raise EdgelmError(f"{self.runtime}: feeds lack the model inputs {missing[:4]}{more}")
        return {n: feeds[n] for n in self.input_names}


@dataclass(frozen=True)
class RuntimeSpec:
    """What a runtime module declares (one record each, registered in RUNTIMES). Its callables are module-level
    functions, so a bench worker (a fresh process) can receive the record of one registered outside this package."""

    name: str
    artifact: str  # the format it loads: "torch" (the HF weights) or a name in edgelm.export.formats.FORMATS
    device: str  # "cpu" | "cuda" | "mobile"
    unavailable: Callable[[], str | None]  # why it cannot run on this machine, None when it can
    open: Callable[[Target, int | None], Runner]  # (target, threads) -> a loaded Runner
    generates: bool  # can time token generation (decoders)
    libraries: tuple[str, ...] = ()  # imported (and timed as import_ms) before the model loads
    default_threads: tuple[int | None, ...] = (None,)  # the bench's thread counts when none are asked for
    evaluates: tuple[str, ...] = ()  # artifact formats `eval` can score on it, preferred first


RUNTIMES: Registry[RuntimeSpec] = Registry("runtime", "edgelm.runtimes")


def register_runtime(spec: RuntimeSpec) -> RuntimeSpec:
    return RUNTIMES.register(spec.name, spec)


def unavailable(runtime: str, target: Target | None = None) -> str | None:
    """Why `runtime` cannot run (target) here, or None when it can."""
    spec = RUNTIMES.get(runtime)
    reason = spec.unavailable()
    if reason is None and target is not None:
        reason = missing_artifact(spec.artifact, target)
    return reason


def missing_artifact(artifact: str, target: Target) -> str | None:
    if artifact == "torch":
        return None if target.model_dir else f"{target.path}: no torch weights (edgelm.json model_dir / config.json)"
    if artifact not in target.files:
        return f"{target.path}: no {FORMATS[artifact].file} (export it with --format {artifact})"
    return None


def open_runner(runtime: str, export_dir: str | Path | Target, threads: int | None = None) -> Runner:
    target = export_dir if isinstance(export_dir, Target) else resolve_target(export_dir)
    reason = unavailable(runtime, target)
    if reason:
        raise EdgelmError(f"{runtime} unavailable: {reason}")
    return RUNTIMES.get(runtime).open(target, threads)


def artifact_size_mb(runtime: str, target: Target) -> float | None:
    """Size on disk of what this runtime loads (weights + graph, external data included)."""
    artifact = RUNTIMES.get(runtime).artifact
    if artifact == "torch":
        files = [p for p in (target.model_dir or Path("/nonexistent")).glob("*.safetensors")]
    else:
        main = target.files.get(artifact)
        files = with_sidecars(artifact, main) if main else []
    return files_mb(files) if files else None


def onnx_input_names(session) -> list[str]:
    return [i.name for i in session.get_inputs()]
