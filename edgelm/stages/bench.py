"""Benchmark latency on CPU, CUDA and mobile-class runtimes: times the stage's input (an export folder or a
torch model) and, interleaved, a named baseline, reporting `speedup: {runtime: x}` for gates."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from edgelm.core.errors import EdgelmError
from edgelm.core.registry import Name
from edgelm.core.stage import Stage, StageConfig, StageResult, register_stage
from edgelm.runtimes.base import RUNTIMES
from edgelm.stages.stock import STOCK_NAME, STOCK_RECIPE


class BenchConfig(StageConfig):
    runtimes: list[Name(RUNTIMES)] = Field(default_factory=lambda: ["ort-cpu"], description="runtimes to time",
                                    json_schema_extra={"cli": "--runtime"})
    threads: list[int] | None = Field(None, description="intra-op thread counts (default: runtime default; ort-mobile 1 2 4)")
    shapes: list[str] | None = Field(None, description="fixed BATCHxSEQ shapes, e.g. 1x128 (default: 1x128 for encoders)")
    data: str | None = Field(None, description="DATA whose sentences are timed one by one at their own lengths "
                                               "(default: the run's eval data, else its data)")
    max_samples: int = Field(200, gt=0, description="dataset sentences to time (seeded sample)")
    pad: bool = Field(False, description="pad dataset sentences to the longest instead of their natural length")
    prompt_len: int = Field(32, gt=0, description="decoder prompt length in tokens")
    new_tokens: int = Field(128, ge=0, description="decoder tokens to generate per timed generation")
    seconds: float = Field(5.0, gt=0, description="time budget per case (stops earlier once the median is stable)")
    rounds: int = Field(1, ge=1, le=20, description="interleaved rounds: every (artifact, runtime, threads) worker runs "
                                                   "once per round, each in a fresh process; rows report the median over rounds")
    baseline: str = Field("source", description="speedup baseline: 'source' (the run's input model, exported like "
                                                "this one when needed), 'stock-int8' (the stock toolchain's int8 of "
                                                "stock_source), a stage folder name, a path, or 'none'")
    stock: bool = Field(False, description="also interleave with the stock toolchain's int8 model (torch export -> "
                                           "ORT transformers optimizer -> quantize_dynamic): speedup_vs_stock")
    speculative: Literal["lookup"] | None = Field(None, description="decoders: also time greedy vs prompt-lookup "
                                                  "speculative decoding on prompt_set; the bundle decodes with it only "
                                                  "when it measured faster with identical tokens")
    prompt_set: str | None = Field(None, description="JSONL prompts of the speculative case (default: edgelm's "
                                                     "lookup-prompts.jsonl: extraction / rewriting / code-edit requests)")
    draft_tokens: int = Field(8, ge=1, le=64, description="speculative: most tokens drafted per step")
    stock_source: str | None = Field(None, description="stage folder (or path) of the torch model the stock-int8 "
                                                       "reference is built from (default: the run's input model)")


@register_stage
class BenchStage(Stage):
    kind = "bench"
    Config = BenchConfig
    summary = "Benchmark latency on CPU, CUDA and mobile-class runtimes"

    def run(self, bundle, config: BenchConfig, ctx) -> StageResult:
        from edgelm.runtimes.base import target_from_bundle
        from edgelm.measure.suite import BenchSettings, run_bench, write_bench_json
        from edgelm.measure.bench_report import write_bench_reports

        if bundle.model_dir is None and bundle.model is not None:
            from edgelm.models.bundle import save_model

            save_model(bundle.model, bundle.tokenizer, ctx.workdir / "weights")
            bundle = bundle.derive(model_dir=ctx.workdir / "weights")
        target = target_from_bundle(bundle, "candidate")
        stock = stock_reference(config, ctx) if config.stock or config.baseline == STOCK_NAME else None
        baseline, why_not = (stock[0], None) if config.baseline == STOCK_NAME else resolve_baseline(config, bundle, ctx)
        settings = BenchSettings(runtimes=list(config.runtimes), threads=config.threads, shapes=config.shapes,
                                 data=pick_data(config, ctx, bundle.task), max_samples=config.max_samples, pad=config.pad,
                                 prompt_len=config.prompt_len, new_tokens=config.new_tokens, seconds=config.seconds,
                                 rounds=config.rounds,
                                 speculative=config.speculative if bundle.task == "causal-lm" else None,
                                 prompt_set=config.prompt_set, draft_tokens=config.draft_tokens)
        bench = run_bench([target], settings, baseline=baseline, accuracy=known_accuracy(ctx, baseline),
                          extra_baselines=[stock[0]] if stock and baseline is not stock[0] else [])
        if why_not:
            bench["speedup_skipped"] = why_not
        if stock:
            bench["stock_recipe"], bench["stock_op_counts"] = STOCK_RECIPE, stock[1]
        files = [write_bench_json(bench, ctx.workdir / "bench.json"), *write_bench_reports(bench, ctx.workdir, "bench")]
        metrics = {**headline_metrics(bench), "baseline": config.baseline, **recommendation(bench, ctx),
                   **speculative_metrics(bench)}
        if metrics["speedup"] or metrics.get("speedup_vs_stock"):
            metrics["speed_verdict"] = speed_verdict(metrics, config.baseline)
        return StageResult(bundle.derive(), metrics, files)


def speculative_metrics(bench: dict, candidate: str = "candidate") -> dict:
    """{"speculative": ...} from the candidate's first measured lookup row: its settings and figures, and `helps`
    (faster than greedy on the same prompts, every token identical) — what the bundle's decoding follows."""
    from edgelm.core.ui import info

    for row in bench["rows"]:
        if row.get("artifact") == candidate and row.get("decoding") == "lookup" and "speculative_speedup" in row:
            spec = row["speculative"]
            helps = bool(row["tokens_identical"]) and row["speculative_speedup"] > 1.0
            info(f"bench: {spec['method']} decoding {row['speculative_speedup']:.2f}x greedy on {row['runtime']} "
                 f"(acceptance {row['acceptance_rate']}, tokens identical: {row['tokens_identical']}); "
                 + ("the bundle uses it" if helps else "the bundle decodes plain greedy"))
            return {"speculative": {**spec, "runtime": row["runtime"], "threads": row.get("threads"),
                                    "prompt_set": row.get("source"), "acceptance_rate": row["acceptance_rate"],
                                    "speculative_speedup": row["speculative_speedup"],
                                    "decode_tok_s": row["decode_tok_s"], "tokens_identical": row["tokens_identical"],
                                    "helps": helps}}
    return {}


def speed_verdict(metrics: dict, baseline: str) -> str:
    """One line for a report headline: x the stock toolchain and x the baseline, saying so when the candidate is
    slower than the run's own baseline (issue 18: never ship a slower candidate silently)."""
    parts = [f"{x:.2f}x the stock toolchain's int8 on {rt}" for rt, x in (metrics.get("speedup_vs_stock") or {}).items()]
    parts += [f"{x:.2f}x {baseline} on {rt}" + (f" (SLOWER than {baseline})" if x < 1 else "")
              for rt, x in metrics["speedup"].items() if baseline != STOCK_NAME]
    return "candidate: " + "; ".join(parts)


def recommendation(bench: dict, ctx) -> dict:
    """Decoders: the runtime to ship on (fastest decode at equal quality), said in one line."""
    from edgelm.core.ui import info
    from edgelm.measure.recommend import perplexity_by_engine, recommend

    pick = recommend(bench["rows"], perplexity_by_engine(list(ctx.previous.values())))
    if pick is None:
        return {}
    info(f"bench: recommends {pick['runtime']}: {pick['why']}")
    return {"recommended_runtime": pick}


def known_accuracy(ctx, baseline) -> dict[str, float]:
    """Accuracy from the latest eval stage of this run (and its reference's, for a source baseline), so the
    report can plot size / latency / accuracy."""
    for metrics in reversed(list(ctx.previous.values())):
        if isinstance(metrics.get("accuracy"), (int, float)):
            known = {"candidate": metrics["accuracy"]}
            if baseline is not None and baseline.name == "source" and metrics.get("reference_accuracy") is not None:
                known["source"] = metrics["reference_accuracy"]
            return known
    return {}


def pick_data(config: BenchConfig, ctx, task: str | None = None) -> str | None:
    """The dataset whose sentences are timed: asked for, else the run's (encoders only: a decoder is timed by
    prompt and generation lengths, and its eval text is a corpus, not sentences)."""
    if config.data:
        return config.data
    if task == "causal-lm":
        return None
    for data in (ctx.eval_data, ctx.data):
        if data is not None and Path(data.path).is_file():
            return data.path
    return None


def resolve_baseline(config: BenchConfig, bundle, ctx):
    """(baseline Target or None, reason when there is none)."""
    from edgelm.runtimes.base import resolve_target, target_from_bundle

    choice = config.baseline
    if choice == "none":
        return None, "baseline: none"
    if choice != "source":
        folder = Path(ctx.run_dir) / choice if ctx.run_dir and (Path(ctx.run_dir) / choice).is_dir() else Path(choice)
        if not folder.is_dir():
            raise EdgelmError(f"bench.baseline: {choice!r} is neither a stage folder of this run nor a folder")
        return resolve_target(folder, name=f"baseline:{folder.name}"), None
    source = ctx.initial_bundle() if ctx.initial_bundle else None
    if source is None:
        return None, "no input model to compare with"
    if source.model_dir is not None and bundle.model_dir is not None and Path(source.model_dir) == Path(bundle.model_dir) \
            and not bundle.artifacts:
        return None, "the benched model is the input model itself"
    formats = sorted({RUNTIMES.get(r).artifact for r in config.runtimes} & set(bundle.artifacts))
    if formats and not set(formats) <= set(source.artifacts):
        source = export_source(source, formats, ctx.workdir / "baseline")
    if source.model_dir is None and source.model is not None:
        from edgelm.models.bundle import save_model

        save_model(source.model, source.tokenizer, ctx.workdir / "baseline" / "weights")
        source = source.derive(model_dir=ctx.workdir / "baseline" / "weights")
    return target_from_bundle(source, "source"), None


def stock_reference(config: BenchConfig, ctx):
    """(Target, op counts) of the stock toolchain's int8 model of `stock_source` (default: the run's input)."""
    from edgelm.stages.stock import stock_target

    source = stock_source_bundle(config, ctx)
    formats = sorted({RUNTIMES.get(r).artifact for r in config.runtimes} & {"onnx", "ort"}) or ["onnx"]
    return stock_target(source, formats, ctx.workdir / STOCK_NAME)


def stock_source_bundle(config: BenchConfig, ctx):
    from edgelm.models.loading import load_bundle

    if config.stock_source is None:
        source = ctx.initial_bundle() if ctx.initial_bundle else None
        if source is None or source.model is None:
            raise EdgelmError("bench stock-int8: no torch input model to build it from; set bench.stock_source")
        return source
    folder = Path(ctx.run_dir) / config.stock_source if ctx.run_dir else Path(config.stock_source)
    folder = folder if folder.is_dir() else Path(config.stock_source)
    if not folder.is_dir():
        raise EdgelmError(f"bench.stock_source: {config.stock_source!r} is neither a stage folder of this run nor a folder")
    return load_bundle(folder, **ctx.load_options())


def export_source(source, formats: list[str], folder: Path):
    """The input model exported like the candidate, so ONNX/.ort/.pte runtimes compare like with like."""
    from edgelm.core.stage import StageContext, get_stage

    stage = get_stage("export")
    folder.mkdir(parents=True, exist_ok=True)
    result = stage().run(source, stage.Config.model_validate({"formats": formats}), StageContext(workdir=folder))
    result.bundle.save(folder)
    return result.bundle


def headline_metrics(bench: dict, candidate: str = "candidate") -> dict:
    """What gates and run reports read: speedup {runtime: x}, the candidate's first p50 per runtime (never the
    baseline's, whose rows are interleaved with it), skip reasons."""
    p50, skipped = {}, {}
    for row in bench["rows"]:
        if row.get("artifact", candidate) != candidate:
            continue
        key = row["runtime"] + (f"@{row['threads']}t" if row["runtime"] == "ort-mobile" and row.get("threads") else "")
        if "skipped" in row or "error" in row:
            skipped.setdefault(key, row.get("skipped") or row.get("error"))
        elif key not in p50:
            p50[key] = row.get("p50_ms")
    metrics = {"speedup": bench["speedup"], "p50_ms": p50, "bench_json": "bench.json"}
    if STOCK_NAME in bench.get("speedup_by_baseline", {}):
        metrics["speedup_vs_stock"] = bench["speedup_by_baseline"][STOCK_NAME]
        metrics["stock_recipe"] = bench["stock_recipe"]
    if skipped:
        metrics["skipped"] = skipped
    if bench.get("speedup_skipped"):
        metrics["speedup_skipped"] = bench["speedup_skipped"]
    return metrics
