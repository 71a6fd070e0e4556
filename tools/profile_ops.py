"""Where an encoder artifact spends its time, by op type: onnxruntime's profiler over real sentences, one at a
time at their own lengths (the bench's dataset case), on a fixed thread count.

    python tools/profile_ops.py RUN/07-quantize/model.ort RUN/03-quantize/model.ort RUN/08-bench/stock-int8/model.ort \
        --data /work/shared/data/sst2/dev.tsv --threads 1 --samples 200

Prints one table per model: op type, ms per sentence, share of the node time, node count.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np


def sentence_feeds(tokenizer_dir: Path, data: str, samples: int, names: list[str]) -> list[dict]:
    from edgelm.data.readers import DataConfig, load_examples
    from edgelm.models.loading import load_tokenizer

    tok = load_tokenizer(tokenizer_dir)
    texts = load_examples(DataConfig(path=data, max_samples=samples, seed=0)).texts
    feeds = []
    for text in texts:
        enc = tok(text, truncation=True, max_length=128, return_tensors="np")
        enc.setdefault("token_type_ids", np.zeros_like(enc["input_ids"]))
        feeds.append({n: enc[n].astype(np.int64) for n in names})
    return feeds


def profile(model: Path, feeds_for, threads: int) -> tuple[dict, int]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.enable_profiling = True
    opts.profile_file_prefix = str(Path(tempfile.mkdtemp()) / "profile")
    session = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    feeds = feeds_for([i.name for i in session.get_inputs()])
    for feed in feeds[:5]:  # warm-up (also profiled: dropped below by counting only the later runs)
        session.run(None, feed)
    for feed in feeds:
        session.run(None, feed)
    events = json.loads(Path(session.end_profiling()).read_text())
    return by_op(events, warmup=5), len(feeds)


def by_op(events: list[dict], warmup: int) -> dict:
    runs = [e for e in events if e.get("name") == "model_run"]
    start = runs[warmup]["ts"] if len(runs) > warmup else 0
    totals, counts = defaultdict(float), defaultdict(set)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= start:
            op = e.get("args", {}).get("op_name", "?")
            totals[op] += e["dur"] / 1000.0
            counts[op].add(e["name"])
    return {op: (ms, len(counts[op])) for op, ms in totals.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--data", required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--samples", type=int, default=200)
    args = parser.parse_args()
    for model in args.models:
        table, n = profile(model, lambda names: sentence_feeds(model.parent, args.data, args.samples, names), args.threads)
        total = sum(ms for ms, _ in table.values())
        print(f"\n{model}  ({n} sentences, {args.threads} thread(s)): {total / n:.3f} ms/sentence in nodes")
        for op, (ms, nodes) in sorted(table.items(), key=lambda kv: -kv[1][0]):
            print(f"  {op:28s} {ms / n:8.3f} ms  {100 * ms / total:5.1f}%  {nodes:3d} nodes")


if __name__ == "__main__":
    main()
