"""Shared checks for the reliability suites: the CLI in-process, in a forked process, and in a real one."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from click.testing import CliRunner

REPO = Path(__file__).resolve().parents[2]


def cli(*args) -> tuple[int, str]:
    """Run `edgelm ARGS` in-process; returns (exit code, stdout+stderr)."""
    from edgelm.cli import main

    result = CliRunner().invoke(main, [str(a) for a in args])
    output = result.output
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        import traceback

        output += "".join(traceback.format_exception(*result.exc_info))  # an escaped exception IS a traceback
    return result.exit_code, output


def assert_user_error(code: int, output: str, expect: str | None = None) -> str:
    """Exit 2, exactly one error line, no traceback. Returns the error line."""
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.lower().startswith("error:")]
    assert code == 2, f"exit {code}, expected 2:\n{output}"
    assert len(errors) == 1, f"expected one error line:\n{output}"
    if expect is not None:
        assert expect.lower() in errors[0].lower(), f"{expect!r} not in {errors[0]!r}"
    return errors[0]


def real_cli(*args, module: str = "edgelm", env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """The real process: `python -m MODULE ARGS` (exit codes as a shell sees them)."""
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, **(env or {})}, timeout=timeout)


# --- a forked edgelm process that a test can SIGKILL at a named point ---------------------------------------
def _child(argv: list[str], log: str, signal_dir: str | None, stop_at: str | None, pause: float) -> None:
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # pytest's capture objects are not the fds
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    # A real `edgelm` process starts with SIGINT unblocked and CPython's own handler installed; a child forked from
    # the test process inherits whatever that process's libraries did to both, so restore them (a Ctrl-C test once
    # slept through its SIGINT in CI).
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if signal_dir:
        os.environ["REL_SIGNAL_DIR"] = signal_dir
        os.environ["REL_PAUSE"] = str(pause)
        if stop_at:
            os.environ["REL_STOP_AT"] = stop_at
    from tests.reliability import plugin

    sys.argv = ["edgelm", *argv]
    plugin.main()


class Forked:
    """`edgelm ARGS` (with the test stages and kill points) in a forked process: torch is already imported."""

    def __init__(self, tmp: Path, *argv, stop_at: str | None = None, signals: bool = True, pause: float = 60.0):
        self.signal_dir = tmp / "signals"
        self.signal_dir.mkdir(parents=True, exist_ok=True)
        self.log = tmp / "child.log"
        ctx = multiprocessing.get_context("fork")
        self.proc = ctx.Process(target=_child, args=([str(a) for a in argv], str(self.log),
                                                     str(self.signal_dir) if signals else None, stop_at, pause))
        self.proc.start()

    def wait_for(self, point: str, timeout: float = 120) -> None:
        deadline = time.time() + timeout
        while not (self.signal_dir / point).exists():
            if not self.proc.is_alive():
                raise AssertionError(f"child exited ({self.proc.exitcode}) before {point}:\n{self.output()}")
            if time.time() > deadline:
                self.kill()
                raise AssertionError(f"child never reached {point}:\n{self.output()}")
            time.sleep(0.02)

    def kill(self) -> None:
        if self.proc.is_alive():
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.join(30)
        assert self.proc.exitcode is not None

    def join(self, timeout: float = 120) -> int:
        self.proc.join(timeout)
        if self.proc.exitcode is None:
            self.kill()
            raise AssertionError(f"child did not finish:\n{self.output()}")
        return self.proc.exitcode

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


# --- published folders -----------------------------------------------------------------------------------
def stage_folders(out: Path) -> list[Path]:
    return sorted(p for p in out.iterdir() if p.is_dir() and p.name[:2].isdigit() and p.name[2:3] == "-")


def assert_complete_stage_folder(folder: Path) -> dict:
    """A published stage folder: metrics.json with its hash, edgelm.json, and whole weight files."""
    from edgelm.models.loading import validate_safetensors

    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics.get("hash"), f"{folder}: metrics.json has no hash"
    bundle = json.loads((folder / "edgelm.json").read_text())
    if bundle.get("model_dir") == ".":
        tensors = list(folder.glob("*.safetensors"))
        assert tensors, f"{folder}: bundle says its weights are here, but there are none"
        for f in tensors:
            validate_safetensors(f)
        assert (folder / "tokenizer.json").is_file() or (folder / "vocab.txt").is_file(), f"{folder}: tokenizer missing"
    for name in metrics.get("files", []):
        assert (folder / name).is_file(), f"{folder}: listed file {name} is missing"
    return metrics


def file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
