"""Faults a user meets: a half-done swap, an empty recipe, a degenerate tokenizer, a full disk, two runs at once,
a damaged cache entry. Each ends with one line and exit 2 (or success), and never a damaged previous output."""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.reliability.helpers import REPO, assert_user_error, cli


def test_a_forced_single_stage_command_restores_a_half_swapped_output(tiny_model, rel_stages, tmp_path):
    model, out = tiny_model("bert"), tmp_path / "out"
    assert cli(rel_stages, model, "-o", out, "--scale", "0.01")[0] == 0
    os.rename(out, tmp_path / ".out.stale-4242")  # a kill between the fallback's two renames
    code, output = cli(rel_stages, model, "-o", out, "--scale", "0.02", "--force")
    assert code == 0, output
    assert (out / "metrics.json").is_file() and not list(tmp_path.glob(".out.*")), "the stale copy was left behind"


def test_a_recipe_with_nothing_to_run_is_one_line_naming_the_file(tmp_path):
    for n, text in enumerate(["task:\n", "gates:\n", "", "gates: {max_size_mb: 3}\n"]):
        recipe = tmp_path / f"r{n}.yaml"
        recipe.write_text(text)
        line = assert_user_error(*cli("run", recipe, "-o", tmp_path / f"out{n}"), "add a model: and a stages: list")
        assert str(recipe) in line and not (tmp_path / f"out{n}").exists()


# --- a tokenizer that loads but cannot work -----------------------------------------------------------------
def _without_unk(model: dict) -> None:
    model["vocab"].pop(model["unk_token"])


def _one_id(model: dict) -> None:
    model["vocab"] = {word: 0 for word in model["vocab"]}


def _empty(model: dict) -> None:
    model["vocab"] = {}


def _past_the_embedding(model: dict) -> None:
    model["vocab"]["zzz"] = 5000


@pytest.mark.parametrize("edit,expect", [
    (_without_unk, "must be in the vocabulary"), (_one_id, "vocabulary entries maps to id 0"),
    (_empty, "vocabulary has no words"), (_past_the_embedding, "ids up to 5000 but the model's embedding has"),
])
@pytest.mark.parametrize("arch", ["bert", "llama"])
def test_a_degenerate_tokenizer_is_one_line_naming_the_file(arch, edit, expect, tiny_model, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(tiny_model(arch), folder)
    tokenizer = json.loads((folder / "tokenizer.json").read_text())
    edit(tokenizer["model"])
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer))
    for command in (["info", folder], ["export", folder, "-o", tmp_path / "out"]):
        line = assert_user_error(*cli(*command), expect)
        assert f"{folder / 'tokenizer.json'}:" in line and "copy the tokenizer files" in line
    assert not (tmp_path / "out").exists()


# --- the disk filling mid-stage -------------------------------------------------------------------------------
def _previous_output(model, out: Path, rel_stages) -> dict:
    code, output = cli(rel_stages, model, "-o", out, "--scale", "0.01", "--files", "0")
    assert code == 0, output
    return {p.name: p.read_bytes() for p in out.iterdir()}


def _assert_kept(out: Path, before: dict, line: str) -> None:
    assert "No space left on device" in line and "the previous output is untouched" in line
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before, "the previous output changed"
    assert not [p.name for p in out.parent.iterdir() if p.name.startswith(".out.")], "temp or lock files left"


def test_a_full_disk_mid_stage_keeps_the_previous_output(tiny_model, rel_stages, tmp_path, monkeypatch):
    """The unit form every CI runs: the stage's own file writes raise ENOSPC."""
    out = tmp_path / "out"
    before = _previous_output(tiny_model("bert"), out, rel_stages)

    def full(self, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(self))

    monkeypatch.setattr(Path, "write_bytes", full)
    line = assert_user_error(*cli(rel_stages, tiny_model("bert"), "-o", out, "--scale", "0.02", "--force"))
    _assert_kept(out, before, line)


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs (needs root / CAP_SYS_ADMIN; skipped with the reason elsewhere)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip() or proc.returncode}); "
                    "test_a_full_disk_mid_stage_keeps_the_previous_output covers it by ENOSPC injection")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(folder: Path, leave: int) -> None:
    """Fill the file system holding `folder` until about `leave` bytes are free."""
    free = shutil.disk_usage(folder).free
    (folder / "filler").write_bytes(b"\0" * max(free - leave, 0))


@pytest.mark.parametrize("leave,files", [(6000, 20), (60_000, 0)])  # full during the stage's writes / the save
def test_a_real_full_disk_keeps_the_previous_output(leave, files, tiny_model, rel_stages, small_disk):
    out = small_disk / "out"
    before = _previous_output(tiny_model("bert"), out, rel_stages)
    _fill(small_disk, leave)
    code, output = cli(rel_stages, tiny_model("bert"), "-o", out, "--scale", "0.02", "--files", str(files), "--force")
    _assert_kept(out, before, assert_user_error(code, output))


# --- the shared GGUF cache: concurrent builds, a damaged entry --------------------------------------------------
@pytest.fixture
def fake_gguf(tiny_model, tmp_path, monkeypatch):
    """A `.gguf` whose dequantization is the tiny LLaMA (slowed so that concurrent runs overlap), in a fresh cache."""
    from edgelm.models import loading

    path = tmp_path / "tiny.gguf"
    path.write_bytes(b"GGUF" + b"\0" * 60)
    calls = tmp_path / "conversions"
    calls.mkdir()

    def dequantize(p):
        (calls / str(os.getpid())).write_text("1")
        time.sleep(1.0)
        return loading.load_hf_folder(tiny_model("llama"), "causal-lm")

    monkeypatch.setenv("EDGELM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(loading, "_dequantize_gguf", dequantize)
    return path, tmp_path / "cache" / "gguf", calls


def _cached_entries(cache: Path) -> list[Path]:
    return sorted(cache.iterdir()) if cache.exists() else []


def _stage_command(argv, barrier, codes) -> None:
    barrier.wait()
    codes.put(cli(*argv)[0])


def test_two_runs_building_the_shared_cache_at_once_both_succeed(fake_gguf, rel_stages, tmp_path):
    from edgelm.models.loading import cache_entry_ok

    path, cache, calls = fake_gguf
    fork = multiprocessing.get_context("fork")
    barrier, codes = fork.Barrier(2), fork.Queue()
    procs = [fork.Process(target=_stage_command, args=([rel_stages, path, "-o", tmp_path / f"out{i}"], barrier, codes))
             for i in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)
    assert sorted(codes.get(timeout=5) for _ in procs) == [0, 0]
    assert len(list(calls.iterdir())) == 2, "the two runs did not both build the entry at once"
    entries = _cached_entries(cache)
    assert len(entries) == 1 and cache_entry_ok(entries[0]), [e.name for e in entries]  # no temp folder left
    assert all((tmp_path / f"out{i}" / "metrics.json").is_file() for i in range(2))


@pytest.mark.parametrize("damage", ["truncate", "garble", "delete-manifest", "delete-config"])
def test_a_damaged_cache_entry_is_detected_and_rebuilt(damage, fake_gguf, tmp_path):
    from edgelm.models.loading import CACHE_MANIFEST, cache_entry_ok, load_model

    path, cache, calls = fake_gguf
    load_model(str(path))
    (entry,) = _cached_entries(cache)
    weights = entry / "model.safetensors"
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif damage == "garble":  # same size, so only the checksum can tell
        data = bytearray(weights.read_bytes())
        data[-64:] = os.urandom(64)
        weights.write_bytes(bytes(data))
    else:
        (entry / (CACHE_MANIFEST if damage == "delete-manifest" else "config.json")).unlink()
    bundle = load_model(str(path))
    assert len(list(calls.iterdir())) == 1 and cache_entry_ok(entry), "the damaged entry was not rebuilt"
    assert bundle.model is not None and _cached_entries(cache) == [entry]


def test_a_cache_hit_does_not_convert_again(fake_gguf):
    from edgelm.models.loading import load_model

    path, cache, calls = fake_gguf
    load_model(str(path))
    (calls / str(os.getpid())).unlink()
    load_model(str(path))
    assert not list(calls.iterdir())


@pytest.mark.slow
def test_two_real_compress_runs_into_different_folders_at_once_both_succeed(tiny_model, tmp_path):
    """Two `edgelm compress` processes at the same time (their own interpreters, one shared EDGELM_CACHE)."""
    model, env = tiny_model("bert", "sequence-classification"), {**os.environ, "EDGELM_CACHE": str(tmp_path / "cache")}
    data = tmp_path / "d.tsv"
    data.write_text("sentence\tlabel\n" + "".join(f"the movie was {w}\t{i % 2}\n" for i, w in enumerate(["great", "bad"] * 20)))
    procs = [subprocess.Popen([sys.executable, "-m", "edgelm", "compress", str(model), "-o", str(tmp_path / f"c{i}"),
                               "--data", str(data), "--target", "cpu"], env=env, cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for i in range(2)]
    outputs = [p.communicate(timeout=1800)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert all((tmp_path / f"c{i}" / "run.json").is_file() for i in range(2))


@pytest.mark.slow
def test_two_processes_converting_the_real_gguf_at_once_share_one_cache_entry(tmp_path):
    from edgelm.models.loading import cache_entry_ok
    from tests.conftest import require_builtin

    require_builtin("smollm2-135m")
    env = {**os.environ, "EDGELM_CACHE": str(tmp_path / "cache")}
    procs = [subprocess.Popen([sys.executable, "-m", "edgelm", "info", "smollm2-135m"], env=env, cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=1800)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    entries = sorted((tmp_path / "cache" / "gguf").iterdir())
    assert len(entries) == 1 and cache_entry_ok(entries[0]), [e.name for e in entries]
