"""Atomic publish (one exchange, or a two-rename swap a later start finishes) and a race-free lock."""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

import pytest

from edgelm.core.errors import EdgelmError
from edgelm.pipeline import run as pipeline_run
from edgelm.pipeline.run import locked, publish, recover_swaps

FORK = multiprocessing.get_context("fork")


def folder(path: Path, text: str) -> Path:
    path.mkdir(parents=True)
    (path / "weights.txt").write_text(text)
    return path


def test_publish_over_an_existing_folder_is_one_atomic_step(tmp_path, monkeypatch):
    old, new = folder(tmp_path / "out", "old"), folder(tmp_path / ".out.tmp", "new")

    def no_rename(*args):  # the two-rename swap would pass through a moment without OUT
        raise AssertionError("publish renamed instead of exchanging")

    monkeypatch.setattr(pipeline_run.os, "rename", no_rename)
    publish(new, old)
    assert (old / "weights.txt").read_text() == "new" and not new.exists()


def _publish_killed_between_renames(tmp: str, final: str) -> None:
    real_rename, calls = os.rename, []

    def rename_then_die(a, b):
        real_rename(a, b)
        calls.append(b)
        os._exit(9)  # SIGKILL-like: no cleanup, no finally

    pipeline_run._exchange = lambda a, b: False  # a file system without renameat2
    pipeline_run.os.rename = rename_then_die
    publish(Path(tmp), Path(final))


def test_a_kill_between_the_two_renames_is_finished_on_the_next_start(tmp_path):
    old, new = folder(tmp_path / "out", "old"), folder(tmp_path / ".out.tmp", "new")
    child = FORK.Process(target=_publish_killed_between_renames, args=(str(new), str(old)))
    child.start()
    child.join(60)
    assert child.exitcode == 9
    stale = list(tmp_path.glob(".out.stale-*"))
    assert not old.exists() and len(stale) == 1, "the simulated kill did not land between the renames"
    assert recover_swaps(tmp_path, "out") == [old]
    assert (old / "weights.txt").read_text() == "old" and not list(tmp_path.glob(".out.stale-*"))


def test_a_leftover_stale_copy_beside_a_published_folder_is_deleted(tmp_path):
    folder(tmp_path / "out", "new")
    folder(tmp_path / ".out.stale-123", "old")
    assert recover_swaps(tmp_path, "out") == []
    assert (tmp_path / "out" / "weights.txt").read_text() == "new" and not (tmp_path / ".out.stale-123").exists()


# --- the lock ------------------------------------------------------------------------------------------------
def _race(parent: str, barrier, wins, hold: float) -> None:
    barrier.wait()
    try:
        with locked(Path(parent), lock_file=Path(parent) / ".out.lock"):
            wins.put(os.getpid())
            time.sleep(hold)
    except EdgelmError:
        pass


def test_of_processes_racing_for_the_lock_exactly_one_wins(tmp_path):
    n = 6
    barrier, wins = FORK.Barrier(n), FORK.Queue()
    procs = [FORK.Process(target=_race, args=(str(tmp_path), barrier, wins, 1.0)) for _ in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    winners = [wins.get(timeout=1) for _ in range(wins.qsize())] if not wins.empty() else []
    assert len(winners) == 1 and not (tmp_path / ".out.lock").exists()


def _churn(parent: str, barrier, rounds: int, overlaps) -> None:
    """Take and release the lock over and over; two holders at once show up as a failed O_EXCL create."""
    barrier.wait()
    for _ in range(rounds):
        try:
            with locked(Path(parent), lock_file=Path(parent) / ".out.lock"):
                try:
                    fd = os.open(Path(parent) / "inside", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                except FileExistsError:
                    overlaps.put(os.getpid())
                    continue
                os.close(fd)
                os.unlink(Path(parent) / "inside")
        except EdgelmError as exc:  # refused because another holds it: fine; anything else is the race
            if "another edgelm run" not in str(exc):
                overlaps.put(str(exc))


@pytest.mark.parametrize("rounds", [300])
def test_a_lock_deleted_on_release_never_has_two_holders(tmp_path, rounds):
    n = 4
    barrier, overlaps = FORK.Barrier(n), FORK.Queue()
    procs = [FORK.Process(target=_churn, args=(str(tmp_path), barrier, rounds, overlaps)) for _ in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * n
    assert overlaps.empty(), "two holders at once, or a spurious error"
