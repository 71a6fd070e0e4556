"""File helpers every layer uses: a file's sha256 (manifests record it, loaders and the consumer check it),
a lenient JSON read for optional side files, and the short content hash resume decisions compare."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def read_json(path: Path):
    """The file's JSON, or {} when it is missing, unreadable or not JSON (for files that may be absent)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}


def fingerprint(obj) -> str:
    """16 hex digits of the sha256 of `obj` as canonical JSON (stage configs, inputs: what decides a resume)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]
