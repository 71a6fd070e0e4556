"""Node + onnxruntime-node for the JS consumer tests: `npm install` of the bundle's package.json into a cache folder
keyed by its hash (~/.cache/edgelm-js/<hash>, or $EDGELM_JS_CACHE), installed once and reused; a skip with the reason
when node/npm are absent or the install fails (offline)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from edgelm.deliver.snippets import js_files

RUNNER = """import * as ort from "onnxruntime-node";
import { Tokenizer } from "@huggingface/tokenizers";
import { pathToFileURL } from "node:url";
const [consumer, ...args] = process.argv.slice(2);
const { main } = await import(pathToFileURL(consumer).href);
process.exitCode = await main(args, { ort, Tokenizer });
"""
# the CPU binaries ship inside onnxruntime-node; its install script only fetches GPU ones (from nuget.org)
NPM_ENV = {"ONNXRUNTIME_NODE_INSTALL": "skip", "npm_config_fund": "false", "npm_config_audit": "false"}


def package_json() -> str:
    return js_files({"task": "feature-extraction", "bundle": {"model": "model.onnx"}})["package.json"]


def cache_root() -> Path:
    return Path(os.environ.get("EDGELM_JS_CACHE") or Path.home() / ".cache" / "edgelm-js")


def npm_reason(stderr: str) -> str:
    """npm's own line for the failure (its `code` and first message line), not the pointer to its log."""
    lines = [ln.removeprefix("npm error").strip() for ln in stderr.splitlines() if ln.startswith("npm error")]
    useful = [ln for ln in lines if ln and not ln.startswith(("A complete log", "at ", "syscall", "errno"))]
    return "; ".join(useful[:2]) or (stderr.strip().splitlines() or ["no output"])[-1]


def npm_install(folder: Path, package: str) -> None:
    """Install into a fresh sibling folder, then rename it into place (a killed install leaves no half cache)."""
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp / "package.json").write_text(package)
    try:
        proc = subprocess.run(["npm", "install", "--no-package-lock"], cwd=tmp, capture_output=True, text=True,
                              timeout=300, env={**os.environ, **NPM_ENV})
    except subprocess.TimeoutExpired:
        shutil.rmtree(tmp, ignore_errors=True)
        pytest.skip("npm install of the JS consumer's packages took over 300 s (offline or a slow registry?)")
    if proc.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        pytest.skip(f"npm install of the JS consumer's packages failed (offline?): {npm_reason(proc.stderr)}")
    (tmp / "runner.mjs").write_text(RUNNER)
    try:
        tmp.rename(folder)
    except OSError:  # another process installed it meanwhile
        shutil.rmtree(tmp, ignore_errors=True)


def node_folder() -> Path:
    """The cache folder holding node_modules and runner.mjs for the current package.json."""
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not on PATH; the JS consumer tests need Node.js and npm")
    package = package_json()
    folder = cache_root() / hashlib.sha256(package.encode()).hexdigest()[:16]
    if not (folder / "runner.mjs").is_file():
        npm_install(folder, package)
    return folder


class NodeConsumer:
    def __init__(self, folder: Path):
        self.folder = folder

    def run(self, bundle, *args: str) -> subprocess.CompletedProcess:
        consumer = Path(bundle) / "edgelmConsumer.mjs"
        return subprocess.run(["node", str(self.folder / "runner.mjs"), str(consumer), str(bundle), *args],
                              capture_output=True, text=True, timeout=300)

    def outputs(self, bundle, *args: str) -> list[dict]:
        proc = self.run(bundle, *args)
        assert proc.returncode == 0, proc.stderr
        return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def share(pairs) -> float:
    pairs = list(pairs)
    return sum(a == b for a, b in pairs) / len(pairs)


def agreement(node: NodeConsumer, bundle, texts: list[str], max_new: int = 8) -> dict:
    """How closely the Node consumer reproduces the Python one on `texts` (labels, embeddings or greedy tokens)."""
    import numpy as np

    from edgelm.deliver.consumer import BundleModel

    got = node.outputs(bundle, *texts, "--max-new-tokens", str(max_new))
    model = BundleModel(bundle)
    want = [model(text, max_new) for text in texts]
    if "label" in want[0]:
        diff = np.abs(np.array([g["logits"] for g in got]) - np.array([w["logits"] for w in want]))
        return {"label_agreement": share((g["label"], w["label"]) for g, w in zip(got, want)), "logits_max_abs_diff": float(diff.max())}
    if "embedding" in want[0]:
        a, b = (np.array([o["embedding"] for o in outs]) for outs in (got, want))
        cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        return {"embedding_max_abs_diff": float(np.abs(a - b).max()), "embedding_min_cosine": float(cos.min())}
    return {"greedy_identical": share((g["token_ids"], w["token_ids"]) for g, w in zip(got, want)),
            "completion_identical": share((g["completion"], w["completion"]) for g, w in zip(got, want)),
            "tokens_per_prompt": min(len(w["token_ids"]) for w in want)}


def both_refuse(node: NodeConsumer, bundle, folder) -> dict:
    """Tamper a copy of the bundle (one byte more in tokenizer.json): {consumer: (exit code, says sha256 mismatch)}."""
    from contextlib import redirect_stderr
    from io import StringIO

    from edgelm.deliver.consumer import main

    copy = Path(folder) / "tampered"
    shutil.copytree(bundle, copy)
    with open(copy / "tokenizer.json", "ab") as fh:
        fh.write(b" ")
    proc = node.run(copy, "--self-test")
    err = StringIO()
    with redirect_stderr(err):
        code = main([str(copy), "--self-test"])
    return {"node": (proc.returncode, "sha256 mismatch" in proc.stderr), "python": (code, "sha256 mismatch" in err.getvalue())}
