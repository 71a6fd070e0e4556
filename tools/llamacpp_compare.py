"""Decode speed of an edgelm int4 ONNX decoder on onnxruntime-cpu against llama.cpp running the model's own
GGUF, side by side on this machine (batch 1, same thread count, same prompt tokens, greedy).

Each measurement runs in a fresh process; the runtimes are interleaved round by round (A B C, C B A, ...) so load
drift hits all alike, and each figure is the median over rounds. Sides:
- `ort-cpu:<folder>`: edgelm's plain greedy decode (the bench worker's `measure_case`, prompt_len + new_tokens);
- `lookup:<folder>` (--lookup): greedy and prompt-lookup speculative decoding of edgelm's lookup prompt set
  (edgelm/recipes/lookup-prompts.jsonl, to EOS or new_tokens) in one process (edgelm.measure.lookup_bench), with
  the acceptance rate and whether every token equals greedy's;
- `llama-bench` (--llama-bench, default $EDGELM_LLAMA_BENCH, /tmp/llamacpp-native/bin/llama-bench or PATH): the
  native llama.cpp benchmark binary: tg<new_tokens> from an empty context, pp<prompt_len>, and tg<new_tokens> at
  depth = the matched prompt length (and at the prompt set's mean length with --lookup), `-r 3` each (--native-reps);
- `llama.cpp:<gguf>` (--python-llamacpp): llama.cpp through llama-cpp-python (its Python loop costs llama.cpp
  15-25%; the native binary is the reference).
The read bandwidth of `threads` threads is measured in every round (roofline = GB/s / MB of the artifact).

    flock /tmp/edgelm-heavy.lock python tools/llamacpp_compare.py --onnx OUT/int4 --threads 2 --lookup \
        --rounds 3 --json llamacpp.json

Absent runtimes are skipped with the reason; nothing is substituted.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

SCHEMA_VERSION = 2
ROOT = Path(__file__).resolve().parents[1]
PROMPT = ("The history of the city begins in the early medieval period, when a small settlement grew up around a "
          "river crossing. Over the following centuries")
NATIVE_DEFAULT = Path("/tmp/llamacpp-native/bin/llama-bench")


# --- workers (one runtime, one fresh process) -----------------------------------------------------------------
def edgelm_runner(folder: str, threads: int):
    """The folder's model.onnx on the ort-cpu runtime (KV-cache generation through the bench runner)."""
    from edgelm.runtimes.base import Target, open_runner

    path = Path(folder).resolve()
    return open_runner("ort-cpu", Target(path.name, path, "causal-lm", {"onnx": path / "model.onnx"}), threads)


def gguf_runner(gguf: str, threads: int):
    """Any GGUF file on the registered llama-cpp runtime (llama-cpp-python)."""
    from edgelm.runtimes.base import Target, open_runner

    path = Path(gguf).resolve()
    return open_runner("llama-cpp", Target(path.name, path.parent, "causal-lm", {"gguf": path}), threads)


def prompt_ids(tokenizer_dir: str, prompt_len: int) -> np.ndarray:
    from edgelm.models.loading import load_tokenizer

    ids = load_tokenizer(Path(tokenizer_dir))(PROMPT, return_tensors="np")["input_ids"][:, :prompt_len]
    return ids.astype(np.int64)


def lookup_worker(args) -> dict:
    """Greedy and prompt-lookup decoding of the prompt set, interleaved per prompt in this process."""
    from edgelm.measure.inputs import lookup_case
    from edgelm.measure.lookup_bench import measure_lookup
    from edgelm.measure.timing import Budget
    from edgelm.models.loading import load_tokenizer
    from edgelm.models.speculative import LookupSettings

    case = lookup_case(load_tokenizer(Path(args.tokenizer)), args.new_tokens,
                       LookupSettings(draft_tokens=args.draft_tokens, ngram_max=args.ngram_max).as_dict())
    meta = {**case.meta, "kind": "lookup"}
    result = measure_lookup(edgelm_runner(args.path, args.threads), meta, case.feeds, Budget(seconds=args.seconds))
    greedy, lookup = result["decodings"]
    slim = lambda row: {k: v for k, v in row.items() if k not in ("times_ms",)}
    return {"greedy": slim(greedy), "lookup": slim(lookup), "prompt_len_mean": case.meta["prompt_len_mean"]}


def worker(args) -> dict:
    from edgelm.measure.machine import peak_rss_mb
    from edgelm.measure.timing import Budget
    from edgelm.measure.worker import measure_case

    if args.worker == "lookup":
        return {**lookup_worker(args), "peak_rss_mb": peak_rss_mb()}
    ids = prompt_ids(args.tokenizer, args.prompt_len)
    runner = gguf_runner(args.path, args.threads) if args.worker == "llama.cpp" else edgelm_runner(args.path, args.threads)
    case = {"kind": "decode", "prompt_len": ids.shape[1], "new_tokens": args.new_tokens}
    figures = measure_case(runner, case, [{"input_ids": ids}], Budget(seconds=args.seconds))
    figures.pop("times_ms", None)
    return {**figures, "first_token": runner.generator().prefill(ids)[0], "peak_rss_mb": peak_rss_mb()}


def run_worker(kind: str, path: str, args) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind, "--path", path, "--tokenizer", args.tokenizer,
           "--threads", str(args.threads), "--prompt-len", str(args.prompt_len), "--new-tokens", str(args.new_tokens),
           "--seconds", str(args.seconds), "--draft-tokens", str(args.draft_tokens), "--ngram-max", str(args.ngram_max)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["worker failed"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- native llama-bench ----------------------------------------------------------------------------------------
def native_binary(given: str | None) -> tuple[str | None, str | None]:
    """(path of llama-bench, None) or (None, why it is absent)."""
    for candidate in [given, os.environ.get("EDGELM_LLAMA_BENCH"), str(NATIVE_DEFAULT), shutil.which("llama-bench")]:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate, None
    return None, ("no llama-bench binary (give --llama-bench, set EDGELM_LLAMA_BENCH, or build llama.cpp's "
                  f"llama-bench into {NATIVE_DEFAULT.parent})")


def run_native(binary: str, gguf: str, args, depths: list[int]) -> dict:
    """One llama-bench process: pp<prompt_len> and tg<new_tokens> at each depth; {test name: tok/s, ...}."""
    cmd = [binary, "-m", gguf, "-t", str(args.threads), "-p", str(args.prompt_len), "-n", str(args.new_tokens),
           "-d", ",".join(str(d) for d in depths), "-r", str(args.native_reps), "-o", "json"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["llama-bench failed"])[-1][:300]}
    tests = json.loads(done.stdout)
    figures = {}
    for t in tests:
        name = (f"pp{t['n_prompt']}" if t["n_prompt"] else f"tg{t['n_gen']}") + f"@d{t['n_depth']}"
        figures[name] = round(t["avg_ts"], 3)
        figures[name + "_stddev"] = round(t["stddev_ts"], 3)
    first = tests[0] if tests else {}
    figures["build"] = {k: first.get(k) for k in ("build_commit", "build_number", "cpu_info", "backends", "type_k",
                                                   "model_type", "model_size", "n_threads", "n_batch")}
    return figures


def bandwidth_round(threads: int) -> float:
    from edgelm.measure.machine import read_bandwidth_gb_s

    return round(read_bandwidth_gb_s(threads), 2)


# --- orchestration ---------------------------------------------------------------------------------------------
def compare(args) -> dict:
    from edgelm.measure.machine import library_versions, machine_info

    sides = [(f"ort-cpu:{Path(p).name}", "onnx", p) for p in args.onnx]
    if args.lookup:
        sides.append((f"lookup:{Path(args.onnx[0]).name}", "lookup", args.onnx[0]))
    skipped = {}
    binary, why = native_binary(args.llama_bench)
    if binary:
        sides.append(("llama-bench", "native", args.gguf))
    else:
        skipped["llama-bench"] = why
    if args.python_llamacpp:
        from edgelm.runtimes.base import unavailable

        reason = unavailable("llama-cpp")
        if reason:
            skipped["llama.cpp (python)"] = reason
        else:
            sides.append((f"llama.cpp:{Path(args.gguf).name}", "llama.cpp", args.gguf))
    depths = sorted({0, args.prompt_len} | ({int(round(args.lookup_depth))} if args.lookup else set()))
    rounds: dict[str, list[dict]] = {name: [] for name, _, _ in sides}
    bandwidth = []
    for r in range(args.rounds):
        bandwidth.append(bandwidth_round(args.threads))
        for name, kind, path in (sides if r % 2 == 0 else sides[::-1]):
            result = run_native(binary, path, args, depths) if kind == "native" else run_worker(kind, path, args)
            rounds[name].append(result)
            print(f"round {r + 1}/{args.rounds} {name}: {headline(kind, result)}", file=sys.stderr)
    rows = [summarize_side(name, kind, rounds[name], args) for name, kind, _ in sides]
    return {"schema_version": SCHEMA_VERSION, "rows": rows, "ratios": ratios(rows, args),
            "read_bandwidth_gb_s": {"per_round": bandwidth, "median": median(bandwidth)},
            "roofline": roofline(rows, median(bandwidth), args), "skipped": skipped, "machine": machine_info(),
            "versions": {**library_versions(), **llamacpp_versions(rounds, binary)}, "prompt": PROMPT,
            "settings": {k: getattr(args, k) for k in ("threads", "prompt_len", "new_tokens", "rounds", "seconds",
                                                       "draft_tokens", "ngram_max", "gguf")},
            "uptime": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()}


def headline(kind: str, result: dict):
    if "error" in result:
        return result["error"]
    if kind == "native":
        return {k: v for k, v in result.items() if k.startswith("tg") and not k.endswith("_stddev")}
    if kind == "lookup":
        return {"greedy": result["greedy"].get("decode_tok_s"), "lookup": result["lookup"].get("decode_tok_s"),
                "acceptance": result["lookup"].get("acceptance_rate"), "identical": result["lookup"].get("tokens_identical")}
    return result.get("decode_tok_s")


def median(values):
    from edgelm.measure.timing import median as _median

    values = [v for v in values if v is not None]
    return round(_median(values), 3) if values else None


def summarize_side(name: str, kind: str, results: list[dict], args) -> dict:
    ok = [x for x in results if "error" not in x]
    row = {"runtime": name, "kind": kind, "threads": args.threads, "rounds": len(results),
           "errors": [x["error"] for x in results if "error" in x]}
    if kind == "native":
        keys = sorted({k for x in ok for k in x if k != "build" and not k.endswith("_stddev")})
        row.update({k: median([x.get(k) for x in ok]) for k in keys})
        row["per_round"] = {k: [x.get(k) for x in ok] for k in keys}
        row["build"] = ok[0]["build"] if ok else None
    elif kind == "lookup":
        for side in ("greedy", "lookup"):
            row[f"{side}_decode_tok_s"] = median([x[side].get("decode_tok_s") for x in ok])
            row[f"{side}_decode_tok_s_per_round"] = [x[side].get("decode_tok_s") for x in ok]
        row["speculative_speedup"] = median([x["lookup"].get("speculative_speedup") for x in ok])
        row["acceptance_rate"] = median([x["lookup"].get("acceptance_rate") for x in ok])
        row["tokens_per_call"] = median([x["lookup"].get("tokens_per_call") for x in ok])
        row["tokens_identical"] = all(x["lookup"].get("tokens_identical") for x in ok) if ok else None
        row["generated_tokens"] = ok[0]["lookup"].get("generated_tokens") if ok else None
        row["prompt_len_mean"] = ok[0]["prompt_len_mean"] if ok else None
        row["ttft_ms"] = median([x["greedy"].get("ttft_ms") for x in ok])
    else:
        row.update({"batch": 1, "prompt_len": args.prompt_len, "new_tokens": args.new_tokens,
                    "decode_tok_s": median([x.get("decode_tok_s") for x in ok]),
                    "decode_tok_s_per_round": [x.get("decode_tok_s") for x in results],
                    "ttft_ms": median([x.get("ttft_ms") for x in ok]), "p50_ms": median([x.get("p50_ms") for x in ok]),
                    "peak_rss_mb": max((x["peak_rss_mb"] for x in ok), default=None),
                    "first_token": ok[0]["first_token"] if ok else None})
    return row


def ratios(rows: list[dict], args) -> dict:
    """The targets' ratios from the medians: edgelm plain decode / llama-bench tg, lookup net / llama-bench tg."""
    native = next((r for r in rows if r["kind"] == "native"), None)
    plain = next((r for r in rows if r["kind"] == "onnx"), None)
    lookup = next((r for r in rows if r["kind"] == "lookup"), None)
    out = {}
    if native is None:
        return out
    tg = lambda depth: native.get(f"tg{args.new_tokens}@d{depth}")
    if plain and plain.get("decode_tok_s") and tg(0):
        out[f"edgelm_decode_vs_llama_bench_tg{args.new_tokens}"] = round(plain["decode_tok_s"] / tg(0), 3)
        if tg(args.prompt_len):
            out[f"edgelm_decode_vs_llama_bench_tg{args.new_tokens}_at_depth_{args.prompt_len}"] = \
                round(plain["decode_tok_s"] / tg(args.prompt_len), 3)
    if lookup and lookup.get("lookup_decode_tok_s"):
        depth = int(round(args.lookup_depth))
        for label, ref in ((f"tg{args.new_tokens}", tg(0)), (f"tg{args.new_tokens}_at_depth_{depth}", tg(depth))):
            if ref:
                out[f"lookup_vs_llama_bench_{label}"] = round(lookup["lookup_decode_tok_s"] / ref, 3)
                out[f"edgelm_greedy_prompt_set_vs_llama_bench_{label}"] = round(lookup["greedy_decode_tok_s"] / ref, 3)
    return out


def roofline(rows: list[dict], bandwidth: float | None, args) -> dict:
    """Read-bandwidth roofline of the int4 artifact: GB/s / MB per token (every weight file read once per token)."""
    from edgelm.core.metrics import files_mb

    folder = Path(args.onnx[0])
    files = [p for p in folder.glob("model.onnx*") if p.is_file()]
    plain = next((r for r in rows if r["kind"] == "onnx"), None)
    if not files or not bandwidth:
        return {}
    mb = files_mb(files)
    roof = bandwidth * 1e3 / mb
    out = {"artifact_mb": mb, "roofline_tok_s": round(roof, 1)}
    if plain and plain.get("decode_tok_s"):
        out["edgelm_decode_share_of_roofline"] = round(plain["decode_tok_s"] / roof, 3)
    return out


def llamacpp_versions(rounds: dict, binary: str | None) -> dict:
    import importlib.metadata as md

    out = {}
    try:
        out["llama-cpp-python"] = md.version("llama-cpp-python")
    except md.PackageNotFoundError:
        pass
    if binary:
        builds = [x.get("build") for x in rounds.get("llama-bench", []) if isinstance(x, dict) and x.get("build")]
        source = Path(binary).resolve().parents[1] / "SOURCE"
        out["llama-bench"] = {"binary": binary, **({"build_commit": builds[0]["build_commit"],
                                                     "build_number": builds[0]["build_number"]} if builds else {}),
                              "source": source.read_text().strip() if source.is_file() else None}
    return out


def default_gguf() -> str:
    import importlib.util

    from edgelm.models.loading import BUILTIN_MODELS

    spec = BUILTIN_MODELS["smollm2-135m"]
    package = importlib.util.find_spec(spec["package"])
    return str(Path(package.origin).parent / spec["subpath"]) if package else ""


def prompt_set_depth(tokenizer_dir: str) -> float:
    """Mean token length of the lookup prompt set: the depth at which llama-bench's matched tg runs."""
    from edgelm.measure.lookup_prompts import load_prompt_set
    from edgelm.models.loading import load_tokenizer

    prompts = load_prompt_set(load_tokenizer(Path(tokenizer_dir)))
    return sum(len(p) for p in prompts) / len(prompts)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--onnx", nargs="+", default=[], help="edgelm export/quantize folders holding model.onnx")
    parser.add_argument("--gguf", default=None, help="GGUF for llama.cpp (default: the built-in SmolLM2 Q4_1)")
    parser.add_argument("--tokenizer", default=None, help="folder with the tokenizer (default: the first --onnx)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--seconds", type=float, default=10.0, help="time budget per worker")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per runtime")
    parser.add_argument("--lookup", action="store_true", help="also time greedy vs prompt-lookup decoding of the prompt set")
    parser.add_argument("--draft-tokens", type=int, default=8)
    parser.add_argument("--ngram-max", type=int, default=3)
    parser.add_argument("--llama-bench", default=None, help="the native llama-bench binary")
    parser.add_argument("--native-reps", type=int, default=3, help="llama-bench -r (repetitions per test and round)")
    parser.add_argument("--python-llamacpp", action="store_true", help="also time llama.cpp through llama-cpp-python")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--worker", choices=["onnx", "llama.cpp", "lookup"], help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not args.worker:
        if not args.onnx:
            parser.error("give at least one --onnx folder")
        args.gguf = args.gguf or default_gguf()
        args.tokenizer = args.tokenizer or args.onnx[0]
        args.lookup_depth = prompt_set_depth(args.tokenizer) if args.lookup else 0
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return 0
    result = compare(args)
    text = json.dumps(result, indent=2)
    if args.json:
        args.json.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
