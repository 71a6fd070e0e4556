"""The speculative-decoding bench case: plain greedy and prompt-lookup decoding of the same prompt set in one
process, interleaved per prompt (edgelm.measure.timing.time_decoders); one row per decoding, the lookup row with
its acceptance rate, its speedup over greedy and whether its tokens equal greedy's token by token."""

from __future__ import annotations

from edgelm.measure import timing


def lookup_unsupported(runner) -> str | None:
    lm = getattr(runner, "lm", None)
    if lm is None or not (hasattr(lm, "extend") and hasattr(lm, "truncate")):
        return f"{runner.runtime}: speculative decoding needs the ONNX KV-cache graph (OnnxCausalLM extend/truncate)"
    return None


def measure_lookup(runner, case: dict, feeds: list[dict], budget: timing.Budget) -> dict:
    from edgelm.models.speculative import GreedyDecoder, LookupDecoder, LookupSettings, LookupStats

    prompts = [f["input_ids"] for f in feeds]
    lengths = [int(p.shape[-1]) for p in prompts]
    decoders = {"greedy": GreedyDecoder(runner.generator())}
    reason = lookup_unsupported(runner)
    if reason is None:
        decoders["lookup"] = LookupDecoder(runner.lm, LookupSettings.from_dict(case["speculative"]))
    runs, outputs, why = timing.time_decoders(decoders, prompts, case["new_tokens"], budget, case.get("eos_token_id"))
    rows = [{"decoding": "greedy", "stop": why, **timing.summarize_decoder(runs["greedy"], lengths)}]
    if reason:
        return {"decodings": rows + [{"decoding": "lookup", "skipped": reason}]}
    lookup = decoders["lookup"]
    counted = LookupStats()
    for stats in lookup.history[1:1 + len(prompts)]:  # the first timed pass (history[0] is the warm generation)
        counted.add(stats)
    mismatched = [i for i, (a, b) in enumerate(zip(outputs["greedy"], outputs["lookup"])) if a != b]
    ratios = [sum(g) / sum(s) for g, s in zip(runs["greedy"]["decode_ms"], runs["lookup"]["decode_ms"]) if sum(s) > 0]
    rows.append({"decoding": "lookup", "stop": why, **timing.summarize_decoder(runs["lookup"], lengths),
                 **counted.as_dict(), **{k: v for k, v in lookup.settings.as_dict().items() if k != "method"}, "tokens_identical": not mismatched,
                 "mismatched_prompts": mismatched, "speculative_speedup": round(timing.median(ratios), 4)})
    return {"decodings": rows}
