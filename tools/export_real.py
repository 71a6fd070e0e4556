"""Real-model export figures (issue 3): wall time, export/optimise seconds, sizes and parity of
`edgelm export minilm-l6 --format onnx ort pte` and `edgelm export smollm2-135m --format onnx ort`.

Run it under the shared heavy lock so timings are not disturbed by other runs:
    flock /tmp/edgelm-heavy.lock python tools/export_real.py --out runs/export-real
Writes OUT/export_real.json (figures + machine facts) and prints it.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

RUNS = {
    "minilm-l6": ["--format", "onnx", "ort", "pte"],
    "smollm2-135m": ["--format", "onnx", "ort", "--greedy-steps", "32"],
}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def run_one(model: str, args: list[str], out: Path) -> dict:
    cmd = [sys.executable, "-m", "edgelm", "export", model, "-o", str(out), "--force", "--json", *args]
    started = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = round(time.time() - started, 1)
    if proc.returncode != 0:
        return {"model": model, "command": " ".join(cmd[2:]), "exit_code": proc.returncode, "wall_s": wall,
                "error": proc.stderr.strip().splitlines()[-1:] }
    from edgelm.core.records import Manifest

    report = json.loads(proc.stdout)
    manifest = Manifest.load(out).model_dump()
    return {"model": model, "command": "edgelm " + " ".join(cmd[3:]), "exit_code": 0, "wall_s": wall,
            "export_seconds": report["metrics"].get("export_seconds"),
            "optimize_seconds": report["metrics"].get("optimize_seconds"), "size_mb": report["metrics"]["size_mb"],
            "files_mb": {n: round(e["bytes"] / 1e6, 2) for n, e in manifest["files"].items()},
            "fusions": (manifest.get("optimization") or {}).get("fusions"), "parity": manifest["parity"],
            "executorch": {k: v for k, v in (manifest.get("executorch") or {}).items() if k.startswith("num_")} or None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/export-real"))
    parser.add_argument("--models", nargs="*", default=list(RUNS))
    opts = parser.parse_args()
    opts.out.mkdir(parents=True, exist_ok=True)
    from edgelm.pipeline.run import environment

    figures = {"machine": {"cpu": cpu_model(), **environment()}, "runs": []}
    for model in opts.models:
        figures["runs"].append(run_one(model, RUNS[model], opts.out / model))
        (opts.out / "export_real.json").write_text(json.dumps(figures, indent=2))
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
