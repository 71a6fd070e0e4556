"""int4 settings sweep for a decoder: quantize the float export once per candidate and score each with one fixed
protocol — WikiText-style sliding-window perplexity (edgelm.measure.quality.perplexity) of the ONNX graph on 2 threads,
against the float graph, and the KL divergence / top-1 agreement of its next-token distributions from the float graph's — plus the quantize stage's own prose parity figures, and the artifact size.

    flock /tmp/edgelm-heavy.lock python tools/int4_sweep.py /work/runs/export-real/smollm2-135m \\
        --text /work/shared/data/wikitext-2/valid.txt --tokens 2048 --out /work/runs/int4-sweep \\
        rtn-sym-b32:block_size=32 rtn-asym-b32:symmetric=False kquant-b32:algorithm=kquant \\
        floattable:quantize_embedding=False,exclude=node_FusedMatMul_696

A candidate is NAME:key=value,... over edgelm.techniques.quantize.onnx_quant.QuantOptions (method int4; exclude takes node
names separated by '+'). Accuracy only: no timings here (use `edgelm bench`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from pathlib import Path


def parse_candidate(spec: str) -> tuple[str, dict]:
    name, _, settings = spec.partition(":")
    options: dict = {}
    for item in filter(None, settings.split(",")):
        key, _, value = item.partition("=")
        if key == "exclude":
            options[key] = value.split("+")
        else:
            options[key] = {"True": True, "False": False, "None": None}.get(value, int(value) if value.lstrip("-").isdigit() else value)
    return name, options


def graph_model(path: Path, tokenizer):
    import numpy as np
    import onnxruntime as ort

    from edgelm.measure.quality import EvalModel
    from edgelm.models.generate import OnnxCausalLM

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.log_severity_level = 2, 3
    lm = OnnxCausalLM(path, session_options=options)
    return EvalModel(lambda feeds: np.asarray(lm.prefill(feeds["input_ids"])[0]), tokenizer,
                     ["input_ids", "attention_mask"], "causal-lm", "ort-cpu")


def graph_scores(path: Path, tokenizer, text: str, windows: dict, reference_logits: list | None) -> tuple[dict, list]:
    """Perplexity of the graph over the text and, against the reference's logits, KL divergence and top-1
    agreement from the same windows (one forward per window). -> (scores, this graph's logits per window)."""
    import numpy as np

    from edgelm.measure.quality import log_softmax, next_token_divergence, scored_windows

    nll, count, logits = 0.0, 0, []
    for rows, targets in scored_windows(graph_model(path, tokenizer), text, **windows):
        nll -= float(log_softmax(rows)[np.arange(len(targets)), targets].sum())
        count += len(targets)
        logits.append(rows.astype(np.float32))
    scores = {"perplexity": round(float(np.exp(nll / count)), 4), "tokens": count, **windows}
    if reference_logits is not None:
        scores.update(next_token_divergence(logits, reference_logits))
    return scores, logits


@contextlib.contextmanager
def one_calibration_pass():
    """Every calibrated candidate reads the same float graph and calibration texts, so within this block one
    calibration pass (the input moments of every MatMul) serves them all; each gets its own copy (AWQ rescales
    them). The module's own function is back on exit."""
    import copy

    from edgelm.techniques.quantize import calibrated

    measure, cache = calibrated.input_moments, {}

    def reused(model, reader, exclude=()):
        key = tuple(sorted(exclude))
        if key not in cache:
            cache[key] = measure(model, reader, exclude)
        return copy.deepcopy(cache[key])

    calibrated.input_moments = reused
    try:
        yield
    finally:
        calibrated.input_moments = measure


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("float_dir", type=Path, help="float export folder (model.onnx + tokenizer)")
    parser.add_argument("candidates", nargs="+", help="NAME:key=value,... (QuantOptions fields)")
    parser.add_argument("--text", type=Path, required=True, help="evaluation text (e.g. wikitext-2 valid.txt)")
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--window", type=int, default=512)
    parser.add_argument("--stride", type=int, default=256)
    parser.add_argument("--out", type=Path, required=True, help="folder for the candidates and results.jsonl")
    args = parser.parse_args(argv)

    from types import SimpleNamespace

    from edgelm.models.loading import load_tokenizer
    from edgelm.verify.feeds import TextCalibrationReader
    from edgelm.export.onnx_io import size_mb
    from edgelm.techniques.quantize.onnx_quant import QuantOptions, needs_calibration, quantize_onnx
    from edgelm.techniques.quantize.workflow import CALIBRATION_MAX_LENGTH, parity_figures, texts_for

    src, text = args.float_dir / "model.onnx", args.text.read_text()
    tokenizer = load_tokenizer(args.float_dir)
    windows = dict(window=args.window, stride=args.stride, max_tokens=args.tokens)
    reference, reference_logits = graph_scores(src, tokenizer, text, windows, None)
    print(json.dumps({"name": "float", **reference, "size_mb": size_mb(src)}), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    with one_calibration_pass():
        for spec in args.candidates:
            name, settings = parse_candidate(spec)
            options = QuantOptions(method="int4", **settings)
            reader = None
            if needs_calibration(options):  # as the stage: built-in prose
                reader = TextCalibrationReader(src, tokenizer, texts_for(None, 64), max_length=CALIBRATION_MAX_LENGTH)
            dst = args.out / name / "model.onnx"
            start = time.perf_counter()
            info = quantize_onnx(src, dst, options, reader)
            seconds = round(time.perf_counter() - start, 1)
            scored, _ = graph_scores(dst, tokenizer, text, windows, reference_logits)
            prose = parity_figures("causal-lm", src, dst, tokenizer, texts_for(None, 32, seed=1),
                                   SimpleNamespace(method="int4", tolerance=[]))["figures"]
            row = {"name": name, "options": options.params(), "exclude": options.exclude, **scored,
                   "ratio": round(scored["perplexity"] / reference["perplexity"], 4), "size_mb": size_mb(dst),
                   "quantize_seconds": seconds, "prose_perplexity_ratio": prose["perplexity_ratio"],
                   "prose_top1_agreement": prose["top1_agreement"], "op_counts": info["op_counts"]}
            print(json.dumps(row), flush=True)
            with open(args.out / "results.jsonl", "a") as results:
                results.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
