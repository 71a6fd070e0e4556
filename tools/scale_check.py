"""Scale check: real decoder configs (random init, no download) through `edgelm compress --target mobile`.

    python tools/scale_check.py smollm2-360m qwen2.5-0.5b [llama-3.2-1b] [--out /tmp/edgelm-scale] [--layers N]

Per model: build the published config (values copied from each model's config.json) with random weights in
its published dtype (bf16) as safetensors under --out, in a child process that exits before the run; run
`edgelm compress FOLDER --target mobile --on-parity-fail warn` while sampling the resident memory of its process
tree; print one table per model: each stage's wall time and peak RSS (run.json's per-stage `peak_rss_mb`), the whole
run's wall time and peak RSS (sampled every 0.2 s: the run resets the kernel's high-water mark per stage, so
`/usr/bin/time`'s figure would be the last stage's), and the fp32 weight size (the 3x budget). Then int4 decode
tok/s on ort-cpu at 2 threads (the run's bench) against a read-bandwidth roofline measured in this run (bytes of
the int4 artifact per token). `--layers N` keeps the first N layers at full width and vocabulary (profiling).

Random weights give near-flat logits, so int4-vs-float parity says little here (hence --on-parity-fail warn);
what counts is time, memory and that every stage completes. The tokenizer is the built-in SmolLM2's byte-level
BPE (49,152 ids, fits every table here; real token counts for the eval texts), else the unit tests' word-level one.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from edgelm.measure.machine import read_bandwidth_gb_s  # noqa: E402

_COMMON = dict(hidden_act="silu", attention_bias=False, tie_word_embeddings=True, torch_dtype="bfloat16")
CONFIGS = {
    # HuggingFaceTB/SmolLM2-360M config.json
    "smollm2-360m": dict(_COMMON, model_type="llama", hidden_size=960, intermediate_size=2560, num_hidden_layers=32,
                         num_attention_heads=15, num_key_value_heads=5, max_position_embeddings=8192,
                         rms_norm_eps=1e-5, rope_theta=100000.0, vocab_size=49152),
    # Qwen/Qwen2.5-0.5B config.json
    "qwen2.5-0.5b": dict(_COMMON, model_type="qwen2", hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                         num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768,
                         rms_norm_eps=1e-6, rope_theta=1000000.0, sliding_window=32768, use_sliding_window=False,
                         max_window_layers=24, vocab_size=151936),
    # meta-llama/Llama-3.2-1B config.json
    "llama-3.2-1b": dict(_COMMON, model_type="llama", hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                         num_attention_heads=32, num_key_value_heads=8, head_dim=64, max_position_embeddings=131072,
                         rms_norm_eps=1e-5, rope_theta=500000.0, vocab_size=128256, mlp_bias=False,
                         rope_scaling=dict(factor=32.0, high_freq_factor=4.0, low_freq_factor=1.0,
                                           original_max_position_embeddings=8192, rope_type="llama3")),
}


def spec_for(name: str, layers: int | None = None) -> dict:
    """The published config, or its first `layers` layers at full width and vocabulary (a quick profiling cut)."""
    spec = dict(CONFIGS[name])
    if layers:
        spec["num_hidden_layers"] = layers
        if "max_window_layers" in spec:
            spec["max_window_layers"] = layers
    return spec


def build(name: str, folder: Path, layers: int | None = None) -> None:
    """Write the random-init model (bf16 safetensors) and the word-level tokenizer into `folder`."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    spec = spec_for(name, layers)
    tokenizer = bpe_tokenizer()
    config = AutoConfig.for_model(spec.pop("model_type"), **spec, bos_token_id=tokenizer.bos_token_id,
                                  eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)  # build in the published dtype: half the memory of fp32
    model = AutoModelForCausalLM.from_config(config).eval()
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    print(json.dumps({"params": sum(p.numel() for p in model.parameters())}))


def bpe_tokenizer():
    """The built-in SmolLM2's tokenizer (a real byte-level BPE), else the unit tests' word-level one."""
    sys.path.insert(0, str(ROOT))
    try:
        from edgelm.models.loading import builtin_path, gguf_to_hf_folder, load_tokenizer

        return load_tokenizer(gguf_to_hf_folder(builtin_path("smollm2-135m")))
    except Exception as exc:  # the built-in is not installed
        from tests.tiny import build_tokenizer

        print(f"scale_check: word-level test tokenizer ({exc})", file=sys.stderr)
        return build_tokenizer(decoder=True)


def built(name: str, out: Path, layers: int | None = None) -> tuple[Path, int]:
    folder = out / f"{name}{f'-{layers}l' if layers else ''}-random"
    params_file = folder / "params.json"
    if not params_file.is_file():
        line = subprocess.run([sys.executable, __file__, "--build", name, str(folder), str(layers or 0)], check=True,
                              capture_output=True, text=True).stdout.strip().splitlines()[-1]
        params_file.write_text(line)
    return folder, json.loads(params_file.read_text())["params"]


def compress(folder: Path, run: Path) -> tuple[float, dict, int]:
    """(wall seconds, {"main": peak RSS MB of the run's process, "tree": of it and its children together}, exit code)."""
    cmd = [sys.executable, "-m", "edgelm", "compress", str(folder), "--target", "mobile", "--on-parity-fail", "warn",
           "-o", str(run)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    log = (run.parent / f"{run.name}.log").open("w")
    started = time.time()
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    peaks = {"main": 0.0, "tree": 0.0}
    sampler = threading.Thread(target=sample_rss, args=(proc, peaks), daemon=True)
    sampler.start()
    rc = proc.wait()
    wall = time.time() - started
    sampler.join()
    log.close()
    return wall, peaks, rc


def sample_rss(proc, peaks: dict, every: float = 0.2) -> None:
    """Max RSS (MB) of `proc` and of its process tree, polled until it exits."""
    import psutil

    try:
        root = psutil.Process(proc.pid)
    except psutil.NoSuchProcess:
        return
    while proc.poll() is None:
        try:
            main = root.memory_info().rss
            tree = main + sum(_rss(c) for c in root.children(recursive=True))
        except psutil.NoSuchProcess:
            break
        peaks["main"], peaks["tree"] = max(peaks["main"], main / 1e6), max(peaks["tree"], tree / 1e6)
        time.sleep(every)


def _rss(process) -> int:
    try:
        return process.memory_info().rss
    except Exception:  # the child ended between listing and reading
        return 0


SUB_STEPS = ("export_seconds", "optimize_seconds")  # the export stage's own split: trace + save, checked fusions


def stage_rows(run: Path) -> list[dict]:
    record = json.loads((run / "run.json").read_text())
    return [{"stage": s["name"], "seconds": s.get("seconds"), "peak_rss_mb": s.get("peak_rss_mb"),
             "split": {k: s["metrics"][k] for k in SUB_STEPS if isinstance(s.get("metrics", {}).get(k), (int, float))}}
            for s in record.get("stages", [])]


def decode_figures(run: Path) -> tuple[float | None, float | None]:
    """(int4 decode tok/s on ort-cpu at 2 threads, MB of the int4 artifact it ran) from the run's bench."""
    record = json.loads((run / "run.json").read_text())
    bench = next(iter(sorted(run.glob("*/bench.json"))), None)
    rows = json.loads(bench.read_text()).get("rows", []) if bench else []
    tok_s = next((r.get("decode_tok_s") for r in rows if r.get("runtime") == "ort-cpu" and r.get("threads") == 2
                  and r.get("artifact", "candidate") == "candidate"), None)
    quant = [s for s in record.get("stages", []) if s["kind"] == "quantize"]
    size = quant[-1]["metrics"].get("size_mb") if quant else None
    return tok_s, size


def report(name: str, params: int, run: Path, wall: float, peaks: dict, rc: int, bandwidth: float) -> None:
    fp32_mb = params * 4 / 1e6
    print(f"\n{name}: {params / 1e6:.0f}M params, fp32 weights {fp32_mb:.0f} MB; exit {rc}; `uptime`: "
          f"{subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    print(f"{'stage':<28}{'wall s':>10}{'peak RSS MB':>14}")
    rows = stage_rows(run) if (run / "run.json").is_file() else []
    for row in rows:
        split = ", ".join(f"{k.removesuffix('_seconds')} {v:.0f} s" for k, v in row["split"].items())
        print(f"{row['stage']:<28}{row['seconds'] or 0:>10.1f}{row['peak_rss_mb'] or float('nan'):>14.0f}"
              + (f"   ({split})" if split else ""))
    peak = peaks["main"]
    print(f"{'total (whole run)':<28}{wall:>10.1f}{peak:>14.0f}   peak / fp32 weights = {peak / fp32_mb:.2f}x "
          f"(with its worker processes: {peaks['tree']:.0f} MB, {peaks['tree'] / fp32_mb:.2f}x)")
    tok_s, size_mb = decode_figures(run) if rows else (None, None)
    if tok_s and size_mb:
        roof = bandwidth * 1e3 / size_mb
        print(f"int4 decode ort-cpu 2 threads: {tok_s:.1f} tok/s; roofline {roof:.1f} tok/s "
              f"({bandwidth:.1f} GB/s read / {size_mb:.0f} MB per token) -> {tok_s / roof:.2f} of roofline")


def main() -> None:
    if sys.argv[1:2] == ["--build"]:  # the child process that writes one model
        return build(sys.argv[2], Path(sys.argv[3]), int(sys.argv[4]) or None)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=["smollm2-360m", "qwen2.5-0.5b"], choices=sorted(CONFIGS))
    parser.add_argument("--out", type=Path, default=Path("/tmp/edgelm-scale"))
    parser.add_argument("--layers", type=int, default=None,
                        help="keep only the first N layers (full width and vocabulary): a quick profiling cut")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.models:
        folder, params = built(name, args.out, args.layers)
        run = args.out / f"{folder.name.removesuffix('-random')}-mobile"
        shutil.rmtree(run, ignore_errors=True)  # a fresh run: resuming would skip the stages being measured
        load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
        wall, peaks, rc = compress(folder, run)
        print(f"\n`uptime` at the start: {load}")
        report(name, params, run, wall, peaks, rc, read_bandwidth_gb_s())


if __name__ == "__main__":
    main()
