"""The app bundle `OUT/bundle/`: what an app developer copies into a phone app.

model (.ort, else .onnx + its external data; .pte too when exported), tokenizer.json, labels.txt (classifiers),
manifest.json (the export manifest with the files re-hashed as shipped, the run's headline figures), selftest.json
(golden inputs with the outputs the shipped files give here: edgelm.deliver.selftest), README.md and integration snippets (Kotlin / Swift / ExecuTorch) rendered from that manifest. File names are plain names
(no folders, no `..`) so nothing in the bundle can point outside it.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from edgelm.core.errors import EdgelmError
from edgelm.core.records import Manifest, RunRecord
from edgelm.export.formats import FORMATS, shipped_formats, with_sidecars

BUNDLE_DIR = "bundle"
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
TOKENIZER_FILE = "tokenizer.json"


def safe_name(name: str) -> str:
    """A file name that stays inside the bundle folder: no separators, no `..`, no leading dot."""
    if not isinstance(name, str) or not SAFE_NAME.match(name) or ".." in name:
        raise EdgelmError(f"bundle file name {name!r} is not a plain file name; refusing it")
    return name


def shipped_stage(run_dir: Path, run: RunRecord) -> tuple[Path, dict]:
    """(folder of the last stage holding an exported artifact, its edgelm.json) from run.json."""
    for stage in reversed(run.stages):
        folder = run_dir / stage.name
        try:
            meta = json.loads((folder / "edgelm.json").read_text())
        except (OSError, ValueError):
            continue
        if any(fmt in meta.get("artifacts", {}) for fmt in FORMATS):
            return folder, meta
    raise EdgelmError(f"{run_dir}: no stage exported a model (.ort/.onnx/.pte); add an export stage to the recipe")


def model_files(folder: Path, meta: dict) -> list[Path]:
    """What the app loads: the .ort (else .onnx with its external data), plus .pte where one exists."""
    arts = {fmt: (folder / rel).resolve() for fmt, rel in meta.get("artifacts", {}).items()}
    files = []
    for fmt in shipped_formats(arts):
        files += with_sidecars(fmt, arts[fmt])
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise EdgelmError(f"{folder}: artifact files are missing ({', '.join(missing)}); re-run the export stage")
    return files


def find_tokenizer(folder: Path, meta: dict, stage_folder: Path) -> Path:
    candidates = [folder]
    if meta.get("model_dir"):
        candidates.append((stage_folder / meta["model_dir"]).resolve())
    for base in candidates:
        if (base / TOKENIZER_FILE).is_file():
            return base / TOKENIZER_FILE
    raise EdgelmError(f"{folder}: no {TOKENIZER_FILE} next to the model; the app bundle needs a fast tokenizer")


def bundle_manifest(folder: Path, meta: dict, run: RunRecord, bundle_dir: Path, model_names: list[str]) -> Manifest:
    """The export manifest re-described for the bundle: its files hashed as shipped, plus the run's figures."""
    from edgelm.pipeline.compress import headline
    from edgelm.export.manifest import file_entries

    manifest = Manifest.load(folder)
    names = sorted(p.name for p in bundle_dir.iterdir() if p.is_file() and p.name != Manifest.FILE)
    manifest.files = file_entries(bundle_dir, names)
    primary = model_names[0]
    manifest.bundle = {
        "model": primary, "format": primary.rsplit(".", 1)[-1], "tokenizer": TOKENIZER_FILE,
        "labels": "labels.txt" if (bundle_dir / "labels.txt").is_file() else None,
        "executorch_model": next((n for n in model_names if n.endswith(".pte")), None),
        "self_test": self_test_entry(bundle_dir),
        "gguf_model": next((n for n in model_names if n.endswith(".gguf")), None),
        "made_by": {"stage": folder.name, "recipe": run.recipe, "history": [h["kind"] for h in meta.get("history", [])]},
    }
    manifest.metrics = {**manifest.metrics, **headline(run)}
    decoding = speculative_decoding(run)
    if decoding:
        manifest.postprocessing = {**manifest.postprocessing, "speculative": decoding}
    return manifest


def speculative_decoding(run: RunRecord) -> dict | None:
    """The speculative decoding the bundle's consumers use: the latest bench stage's measurement when it helped
    (faster than greedy with identical tokens on its prompt set), else None (plain greedy)."""
    for stage in reversed(run.stages):
        measured = stage.metrics.get("speculative")
        if isinstance(measured, dict):
            if not measured.get("helps"):
                return None
            keep = ("method", "draft_tokens", "ngram_max", "ngram_min")
            return {**{k: measured[k] for k in keep if k in measured},
                    "measured": {k: measured.get(k) for k in ("runtime", "threads", "prompt_set", "acceptance_rate",
                                                              "speculative_speedup", "decode_tok_s")}}
    return None


def self_test_entry(bundle_dir: Path) -> dict | None:
    from edgelm.deliver.selftest import SELF_TEST_FILE
    from edgelm.verify.tolerances import BUNDLE_SELF_TEST

    if not (bundle_dir / SELF_TEST_FILE).is_file():
        return None
    return {"file": SELF_TEST_FILE, "tolerances": BUNDLE_SELF_TEST}


def write_self_test(bundle_dir: Path) -> None:
    """selftest.json: the golden inputs run through the shipped files with the reference consumer."""
    from edgelm.core.ui import info
    from edgelm.deliver.consumer import BundleModel
    from edgelm.deliver.selftest import SELF_TEST_FILE, golden
    from edgelm.verify.tolerances import BUNDLE_SELF_TEST

    manifest = Manifest.load(bundle_dir)
    if manifest.bundle["format"] not in ("ort", "onnx"):
        info(f"bundle: no self-test (onnxruntime cannot run {manifest.bundle['model']})")
        return
    spec = golden(BundleModel(bundle_dir), BUNDLE_SELF_TEST)
    (bundle_dir / SELF_TEST_FILE).write_text(json.dumps(spec) + "\n")


def write_bundle(run_dir: str | Path, bundle_dir: str | Path | None = None) -> Path:
    """Write (replace) the app bundle for a finished run; returns its folder."""
    from edgelm.deliver.snippets import render_all
    from edgelm.pipeline.run import publish

    run_dir = Path(run_dir)
    final = Path(bundle_dir) if bundle_dir else run_dir / BUNDLE_DIR
    run = RunRecord.load(run_dir)
    stage_folder, meta = shipped_stage(run_dir, run)
    models = model_files(stage_folder, meta)
    folder = models[0].parent  # the export / quantize folder: manifest.json and tokenizer live beside the model
    tmp = final.with_name(f".{final.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for src in models:
        shutil.copyfile(src, tmp / safe_name(src.name))
    shutil.copyfile(find_tokenizer(folder, meta, stage_folder), tmp / TOKENIZER_FILE)
    labels = Manifest.load(folder).postprocessing.get("labels")
    if labels:
        (tmp / "labels.txt").write_text("\n".join(str(x) for x in labels) + "\n")
    bundle_manifest(folder, meta, run, tmp, [m.name for m in models]).save(tmp)  # the self-test loads it verified
    write_self_test(tmp)
    manifest = bundle_manifest(folder, meta, run, tmp, [m.name for m in models])
    for name, text in render_all(manifest.model_dump(mode="json")).items():
        (tmp / safe_name(name)).write_text(text)
    bundle_manifest(folder, meta, run, tmp, [m.name for m in models]).save(tmp)  # hashes cover README/snippets
    publish(tmp, final)
    return final
