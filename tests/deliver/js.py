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


def npm_install(folder: Path, package: str) -> None:
    """Install into a fresh sibling folder, then rename it into place (a killed install leaves no half cache)."""
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp / "package.json").write_text(package)
    proc = subprocess.run(["npm", "install", "--no-package-lock"], cwd=tmp, capture_output=True, text=True,
                          timeout=600, env={**os.environ, **NPM_ENV})
    if proc.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.skip(f"npm install of the JS consumer's packages failed (offline?): {last}")
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
