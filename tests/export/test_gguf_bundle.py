"""The app bundle's llama.cpp snippet: rendered when the bundle ships a GGUF, naming it; compiled against
llama.h when a llama.cpp source is at $EDGELM_LLAMA_CPP (else that check skips with the reason)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from edgelm.deliver.snippets import render_all

MANIFEST = {"task": "causal-lm", "bundle": {"model": "model.ort", "format": "ort", "gguf_model": "model.gguf"},
            "inputs": [], "outputs": [], "preprocessing": {}, "postprocessing": {"eos_token_id": 2}, "files": {}}


def test_llama_cpp_snippet_ships_with_a_gguf_only():
    files = render_all(MANIFEST)
    assert '"model.gguf"' in files["llama_cpp_generate.cpp"]
    assert "llama_cpp_generate.cpp" not in render_all({**MANIFEST, "bundle": {**MANIFEST["bundle"], "gguf_model": None}})


def test_llama_cpp_snippet_compiles_against_llama_h(tmp_path):
    root = Path(os.environ.get("EDGELM_LLAMA_CPP", "/nonexistent"))
    if not (root / "include" / "llama.h").is_file() or shutil.which("g++") is None:
        pytest.skip(f"no llama.cpp source with include/llama.h at $EDGELM_LLAMA_CPP ({root}) or no g++")
    source = tmp_path / "snippet.cpp"
    source.write_text(render_all(MANIFEST)["llama_cpp_generate.cpp"])
    done = subprocess.run(["g++", "-std=c++17", "-fsyntax-only", f"-I{root / 'include'}", f"-I{root / 'ggml' / 'include'}",
                           str(source)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
