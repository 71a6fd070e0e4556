"""Where an artifact spends its time, by op type: onnxruntime's profiler over real sentences, one at a time at
their own lengths (the bench's dataset case), or (--decode) over the decode steps of a KV-cache decoder, on a
fixed thread count.

    python tools/profile_ops.py RUN/07-quantize/model.ort RUN/03-quantize/model.ort RUN/08-bench/stock-int8/model.ort \
        --data /work/shared/data/sst2/dev.tsv --threads 1 --samples 200
    python tools/profile_ops.py OUT/int4/model.onnx --decode 32+128 --threads 2

Prints one table per model: op type, ms per sentence (per decode step), share of the node time, node count; for
decode also the step's wall time outside the nodes (session overhead, feeds and fetches, the Python loop).
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


def profiled_options(threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.enable_profiling = True
    opts.profile_file_prefix = str(Path(tempfile.mkdtemp()) / "profile")
    return opts


def profile(model: Path, feeds_for, threads: int) -> tuple[dict, int]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), profiled_options(threads), providers=["CPUExecutionProvider"])
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


def profile_decode(model: Path, prompt_len: int, new_tokens: int, threads: int, warm_steps: int = 8):
    """({op: (ms, nodes)} over the decode steps after `warm_steps`, steps counted, wall ms per counted step)."""
    import time

    from edgelm.measure.inputs import decode_case
    from edgelm.models.generate import OnnxCausalLM
    from edgelm.models.loading import load_tokenizer

    ids = decode_case(load_tokenizer(model.parent), prompt_len, new_tokens).feeds[0]["input_ids"]
    lm = OnnxCausalLM(model, session_options=profiled_options(threads))
    logits, state = lm.prefill(ids)
    walls = []
    for _ in range(new_tokens - 1):
        start = time.perf_counter()
        logits, state = lm.decode(np.array([int(np.argmax(logits[0, -1]))]), state)
        walls.append((time.perf_counter() - start) * 1e3)
    events = json.loads(Path(lm.session.end_profiling()).read_text())
    counted = walls[warm_steps:]
    return by_op(events, warmup=1 + warm_steps), len(counted), sum(counted) / len(counted)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--data", help="sentences to time (encoders)")
    parser.add_argument("--decode", help="PROMPT+NEW: profile the decode steps of a KV-cache decoder, e.g. 32+128")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--samples", type=int, default=200)
    args = parser.parse_args()
    if args.decode:
        prompt_len, new_tokens = (int(x) for x in args.decode.split("+"))
        for model in args.models:
            table, n, wall = profile_decode(model, prompt_len, new_tokens, args.threads)
            total = sum(ms for ms, _ in table.values())
            print(f"\n{model}  ({n} decode steps after a {prompt_len}-token prompt, {args.threads} thread(s)): "
                  f"{wall:.3f} ms/step wall, {total / n:.3f} ms/step in nodes, {wall - total / n:.3f} ms/step outside")
            for op, (ms, nodes) in sorted(table.items(), key=lambda kv: -kv[1][0]):
                print(f"  {op:28s} {ms / n:8.3f} ms  {100 * ms / total:5.1f}%  {nodes:3d} nodes")
        return
    if not args.data:
        parser.error("give --data (encoders) or --decode PROMPT+NEW (decoders)")
    for model in args.models:
        table, n = profile(model, lambda names: sentence_feeds(model.parent, args.data, args.samples, names), args.threads)
        total = sum(ms for ms, _ in table.values())
        print(f"\n{model}  ({n} sentences, {args.threads} thread(s)): {total / n:.3f} ms/sentence in nodes")
        for op, (ms, nodes) in sorted(table.items(), key=lambda kv: -kv[1][0]):
            print(f"  {op:28s} {ms / n:8.3f} ms  {100 * ms / total:5.1f}%  {nodes:3d} nodes")


if __name__ == "__main__":
    main()
