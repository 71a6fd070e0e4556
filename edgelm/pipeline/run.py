"""Run stages in order: one folder per stage (`NN-kind/`), atomic publish, resume, lock, run.json.

Each stage runs in `.NN-kind.tmp/`, saves its bundle and `metrics.json` there and is published by one
`os.rename`. A stage folder counts as finished only when its `metrics.json` carries the hash of everything it
depends on (input model, data, every earlier stage config, its own config); a re-run skips finished stages and
loads the bundle of the last one. A lock file keeps two runs out of the same output folder.
"""

from __future__ import annotations

import errno
import fcntl
import os
import platform
import random
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from edgelm.models.bundle import ModelBundle
from edgelm.models.loading import load_bundle
from edgelm.core.errors import EdgelmError, StageFailed
from edgelm.core.io import fingerprint
from edgelm.core.records import GateRow, RunRecord, StageMetrics, StageRecord
from edgelm.core.stage import StageConfig, StageContext, get_stage, require_hf_model
from edgelm.core.ui import info, stage_finished, stage_started
from edgelm.measure.machine import peak_rss_mb, reset_peak_rss


# --- locking and atomic publish ---------------------------------------------------------------------------
@contextmanager
def locked(out: Path, lock_file: Path | None = None):
    """Exclusive lock on OUT (the file `OUT/.lock`, or `lock_file`, which the holder then deletes on release);
    released by the OS even when the process is killed."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EdgelmError(f"{out}: cannot create the output folder ({exc.strerror or exc}); pick another -o") from None
    path = lock_file or out / ".lock"
    handle = _acquire(path, out)
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    try:
        yield
    finally:
        if lock_file is not None:  # unlinked while still held: a waiter that got this inode sees it is gone
            lock_file.unlink(missing_ok=True)
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def _acquire(path: Path, out: Path):
    """flock `path`; race-free against a holder that deletes it: the lock counts only on the inode still at `path`."""
    for _ in range(100):
        handle = _open_lock(path, out)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            handle.close()
            raise EdgelmError(f"{out}: another edgelm run (pid {holder}) is using this output folder; wait for it or "
                              "pick another -o") from None
        if _same_file(handle, path):
            return handle
        handle.close()  # the previous holder deleted it after we opened it: try the new one
    raise EdgelmError(f"{out}: could not take the lock {path}; another edgelm run keeps replacing it")


def _open_lock(path: Path, out: Path):
    try:
        return open(path, "a+")
    except OSError as exc:
        raise EdgelmError(f"{out}: cannot create the output folder ({exc.strerror or exc}); pick another -o") from None


def _same_file(handle, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(handle.fileno()), os.stat(path))
    except FileNotFoundError:
        return False


RENAME_EXCHANGE = 2  # linux/fs.h: swap two paths atomically


def publish(tmp: Path, final: Path) -> None:
    """Replace `final` by `tmp` so that readers never see a half-written folder: one atomic exchange of the two
    folders (Linux renameat2), else two renames that `recover_swaps` finishes after a kill between them."""
    if not final.exists():
        os.rename(tmp, final)
    elif _exchange(tmp, final):
        shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the old output
    else:
        stale = final.with_name(f".{final.name}.stale-{os.getpid()}")
        os.rename(final, stale)
        os.rename(tmp, final)
        shutil.rmtree(stale, ignore_errors=True)
    _fsync_dir(final.parent)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths; False where the OS or file system cannot (then nothing happened)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if not hasattr(libc, "renameat2"):
        return False
    at_cwd = -100
    if libc.renameat2(at_cwd, os.fsencode(a), at_cwd, os.fsencode(b), RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EPERM):
        return False
    raise OSError(code, os.strerror(code), str(b))


def recover_swaps(folder: Path, name: str = "*") -> list[Path]:
    """Finish a two-rename publish that a kill interrupted: a hidden `.NAME.stale-PID` whose NAME is missing is
    the previous output and is put back; one whose NAME exists is deleted. Caller holds the lock. Returns the
    folders put back."""
    restored = []
    for stale in folder.glob(f".{name}.stale-*"):
        final = stale.with_name(stale.name[1:].rsplit(".stale-", 1)[0])
        if final.exists():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            os.rename(stale, final)
            restored.append(final)
            info(f"{final}: an earlier run was killed while replacing it; restored the previous output")
    return restored


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- hashing ----------------------------------------------------------------------------------------------
def path_fingerprint(spec: str | None) -> str | None:
    """Identity of a file or folder by names, sizes and mtimes (cheap; content hashing a GB model is not)."""
    if spec is None:
        return None
    path = Path(spec).expanduser()
    if not path.exists():
        return spec
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return fingerprint([(str(f.relative_to(path.parent)), f.stat().st_size, f.stat().st_mtime_ns) for f in files[:2000]])


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    if not 0 <= seed < 2**63:
        raise EdgelmError(f"seed {seed}: must be a whole number from 0 to 2**32-1")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# --- running ----------------------------------------------------------------------------------------------
@dataclass
class RunSpec:
    """What a run needs besides the steps: how to get the input bundle and the shared context."""

    steps: list[tuple[str, StageConfig]]
    input_key: dict  # identifies the input model + data for resume hashes
    load_input: callable
    seed: int = 0
    data: object | None = None
    eval_data: object | None = None
    allow_pickle: bool = False
    trust_remote_code: bool = False


def stage_names(steps: list[tuple[str, StageConfig]]) -> list[str]:
    """The stage folders of a run: NN-kind, numbered from 01."""
    return [f"{i + 1:02d}-{kind}" for i, (kind, _) in enumerate(steps)]


def chain_hashes(input_key: dict, steps: list[tuple[str, StageConfig]]) -> list[str]:
    """Each stage's resume hash: its kind and config chained onto everything before it (input model, data, seed)."""
    hashes, prev = [], fingerprint(input_key)
    for kind, config in steps:
        prev = fingerprint([prev, kind, config.model_dump(mode="json")])
        hashes.append(prev)
    return hashes


def run_steps(spec: RunSpec, out: Path) -> list[StageRecord]:
    """Run or resume every step into OUT/NN-kind/. Caller holds the lock."""
    out.mkdir(parents=True, exist_ok=True)
    names = stage_names(spec.steps)
    hashes = chain_hashes(spec.input_key, spec.steps)
    _clean_temp_folders(out)
    done = _finished_prefix(out, names, hashes)
    records, previous = [], {}
    for i in range(done):
        stage = StageMetrics.load(out / names[i])
        previous[names[i]] = stage.metrics
        records.append(StageRecord(name=names[i], kind=spec.steps[i][0], hash=hashes[i], status="resumed",
                                   seconds=stage.seconds, peak_rss_mb=stage.peak_rss_mb, metrics=stage.metrics))
        stage_finished(names[i], stage.metrics, stage.seconds, resumed=True)
    _remove_stale(out, names, done)
    initial_cache: dict = {}

    def initial() -> ModelBundle:
        if "b" not in initial_cache:
            seed_everything(spec.seed)  # a head the task adds at load (e.g. a classifier) starts from the seed too
            initial_cache["b"] = spec.load_input()
        return initial_cache["b"]

    bundle = load_bundle(out / names[done - 1], allow_pickle=spec.allow_pickle,
                         trust_remote_code=spec.trust_remote_code) if done else None
    for i in range(done, len(spec.steps)):
        if bundle is None:
            bundle = initial()
        kind, config = spec.steps[i]
        ctx = StageContext(workdir=out / f".{names[i]}.tmp", data=spec.data, eval_data=spec.eval_data,
                           seed=spec.seed + i, allow_pickle=spec.allow_pickle, trust_remote_code=spec.trust_remote_code,
                           run_dir=out, previous=dict(previous), initial_bundle=initial)
        record, bundle = run_one(kind, config, bundle, ctx, out / names[i], hashes[i])
        previous[names[i]] = record.metrics
        records.append(record)
    return records


def run_one(kind: str, config: StageConfig, bundle: ModelBundle, ctx: StageContext, final: Path, step_hash: str):
    """Run one stage into ctx.workdir and publish it as `final`. Returns (record, output bundle)."""
    stage = get_stage(kind)()
    require_hf_model(bundle, kind)
    shutil.rmtree(ctx.workdir, ignore_errors=True)
    ctx.workdir.mkdir(parents=True)
    seed_everything(ctx.seed)
    stage_started(final.name)
    started = time.time()
    reset_peak_rss()
    try:
        result = stage.run(bundle, config, ctx)
    except (EdgelmError, KeyboardInterrupt):
        shutil.rmtree(ctx.workdir, ignore_errors=True)
        raise
    except OSError as exc:
        shutil.rmtree(ctx.workdir, ignore_errors=True)
        if exc.errno not in DISK_ERRORS:
            raise StageFailed(final.name, exc) from exc
        raise cannot_write(final, exc) from None
    except Exception as exc:
        shutil.rmtree(ctx.workdir, ignore_errors=True)
        raise StageFailed(final.name, exc) from exc
    seconds, peak = round(time.time() - started, 3), peak_rss_mb()
    out_bundle = result.bundle
    if out_bundle is bundle:
        raise StageFailed(final.name, RuntimeError("stage returned its input bundle; it must derive a new one"))
    out_bundle.record(kind, config.model_dump(mode="json"))
    record = StageMetrics(kind=kind, hash=step_hash, config=config.model_dump(mode="json"), metrics=result.metrics,
                          files=[os.path.relpath(f, ctx.workdir) for f in result.files], seconds=seconds,
                          peak_rss_mb=peak, finished_at=time.strftime("%Y-%m-%dT%H:%M:%S"))
    try:
        out_bundle.save(ctx.workdir)
        record.save(ctx.workdir)
        publish(ctx.workdir, final)
    except OSError as exc:  # disk full, permissions: the user can fix it; nothing half-written stays visible
        shutil.rmtree(ctx.workdir, ignore_errors=True)
        raise cannot_write(final, exc) from None
    out_bundle = _rebase(out_bundle, ctx.workdir, final)
    stage_finished(final.name, result.metrics, seconds)
    return StageRecord(name=final.name, kind=kind, hash=step_hash, status="ran", seconds=seconds, peak_rss_mb=peak,
                       metrics=result.metrics), out_bundle


DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EFBIG)


def cannot_write(final: Path, exc: OSError) -> EdgelmError:
    """The one line for a disk that is full, read-only or not ours, whether the stage or the save hit it."""
    return EdgelmError(f"{final}: cannot write the stage output ({exc.strerror or exc}); free disk space or pick "
                       "another -o, then re-run (finished stages are kept, the previous output is untouched)")


def _rebase(bundle: ModelBundle, old: Path, new: Path) -> ModelBundle:
    """After the rename, point paths that were inside the temp folder at the published one."""

    def move(p: Path | None) -> Path | None:
        if p is None:
            return None
        try:
            return new / Path(p).relative_to(old)
        except ValueError:
            return p

    bundle.model_dir = move(bundle.model_dir)
    bundle.artifacts = {k: move(v) for k, v in bundle.artifacts.items()}
    return bundle


def _clean_temp_folders(out: Path) -> None:
    for tmp in out.glob(".*.tmp"):
        shutil.rmtree(tmp, ignore_errors=True)
    recover_swaps(out)


def _finished_prefix(out: Path, names: list[str], hashes: list[str]) -> int:
    for i, (name, step_hash) in enumerate(zip(names, hashes)):
        stage = StageMetrics.read(out / name)
        if stage is None or stage.hash != step_hash:
            return i
    return len(names)


def _remove_stale(out: Path, names: list[str], done: int) -> None:
    """Stage folders after the finished prefix (or from an older recipe) no longer describe this run."""
    keep = set(names[:done])
    for folder in out.iterdir():
        if folder.is_dir() and folder.name[:2].isdigit() and folder.name[2:3] == "-" and folder.name not in keep:
            shutil.rmtree(folder)


# --- run.json ---------------------------------------------------------------------------------------------
def environment() -> dict:
    import importlib.metadata as md

    versions = {}
    for pkg in ("edgelm", "torch", "transformers", "onnx", "onnxruntime", "onnxscript", "peft", "executorch", "torchao", "numpy"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return {"python": platform.python_version(), "platform": platform.platform(), "machine": platform.machine(),
            "cpu_count": os.cpu_count(), "versions": versions}


def write_run_json(out: Path, records: list[StageRecord], *, seed: int, input_key: dict, recipe: str | None = None,
                   gates: list[GateRow] = ()) -> RunRecord:
    run = RunRecord(seed=seed, input=input_key, environment=environment(), stages=records,
                    total_seconds=round(sum(r.seconds for r in records), 3), recipe=recipe, gates=list(gates))
    run.save(out)
    return run
