import os
from pathlib import Path

import pytest

from tests.measure.exports import tiny_export  # noqa: F401  (a shared session fixture)
from tests.tiny import build_tiny

os.environ.setdefault("EDGELM_QUIET", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _quiet_console(monkeypatch):
    """Every test starts quiet: a CLI call with --verbose / --quiet sets the level in the environment (for its
    worker processes), which would otherwise leak into the tests after it."""
    monkeypatch.setenv("EDGELM_QUIET", "1")
    monkeypatch.delenv("EDGELM_VERBOSE", raising=False)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """tiny_model(arch, task=None) -> path of a cached tiny HF folder (built once per session)."""
    cache = {}

    def make(arch: str, task: str | None = None, num_labels: int = 2) -> Path:
        key = (arch, task, num_labels)
        if key not in cache:
            folder = tmp_path_factory.mktemp(f"tiny-{arch}-{task or 'default'}")
            cache[key] = build_tiny(folder, arch, task, num_labels)
        return cache[key]

    return make


@pytest.fixture
def sst2_dir():
    folder = SHARED_DATA / "sst2"
    if not (folder / "dev.tsv").is_file():
        pytest.skip(f"real data absent: {folder} (see ../shared/data/README.md)")
    return folder


@pytest.fixture
def wikitext_valid():
    path = SHARED_DATA / "wikitext-2" / "valid.txt"
    if not path.is_file():
        pytest.skip(f"real data absent: {path}")
    return path


def require_builtin(name: str) -> Path:
    from edgelm.core.errors import EdgelmError
    from edgelm.models.loading import builtin_path

    try:
        return builtin_path(name)
    except EdgelmError as exc:
        pytest.skip(f"real model absent: {exc}")


def pytest_collection_modifyitems(config, items):
    """`slow` tests (long real-model runs) are skipped with the reason unless EDGELM_SLOW=1."""
    if os.environ.get("EDGELM_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow real-model test; set EDGELM_SLOW=1 to run it")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
