"""Which runtime to ship a decoder on: the fastest decode among the candidate's bench rows whose artifact is of
equal quality (perplexity within EQUAL_QUALITY of the best artifact's, from the run's eval by runtime).
Artifacts are compared by engine: .onnx and .ort hold the same graph, so ort-cpu and ort-mobile share a score."""

from __future__ import annotations

from edgelm.export.formats import FORMATS
from edgelm.runtimes.base import RUNTIMES

EQUAL_QUALITY = 1.02  # perplexity within 2% of the best artifact's counts as equal quality


def engine(runtime: str) -> str:
    artifact = RUNTIMES.get(runtime).artifact if runtime in RUNTIMES else "torch"
    return FORMATS[artifact].engine if artifact in FORMATS else artifact


def perplexity_by_engine(evals: list[dict]) -> dict[str, float]:
    """{engine: perplexity} from eval stage metrics (their by_runtime sections), latest eval winning."""
    scores = {}
    for metrics in evals:
        for runtime, figures in (metrics.get("by_runtime") or {}).items():
            if isinstance(figures.get("perplexity"), (int, float)):
                scores[engine(runtime)] = figures["perplexity"]
    return scores


def recommend(rows: list[dict], perplexity: dict[str, float], candidate: str = "candidate") -> dict | None:
    """{"runtime", "threads", "decode_tok_s", "why"} or None when no candidate row has a decode speed."""
    timed = [r for r in rows if r.get("artifact") == candidate and r.get("decode_tok_s")]
    plain = [r for r in timed if r.get("decoding") is None]  # the main case: not the lookup prompt set's rows
    timed = plain or timed
    if not timed:
        return None
    best = min(perplexity.values(), default=None)
    equal = [r for r in timed if best is None or perplexity.get(engine(r["runtime"]), best) <= best * EQUAL_QUALITY]
    pick = max(equal or timed, key=lambda r: r["decode_tok_s"])
    others = ", ".join(f"{r['runtime']}@{r.get('threads')}t {r['decode_tok_s']:.1f}" for r in timed if r is not pick)
    quality = f"; perplexity {perplexity[engine(pick['runtime'])]:.3f} (best artifact {best:.3f})" \
        if engine(pick["runtime"]) in perplexity else "; no perplexity on its artifact"
    dropped = [f"{r['runtime']} ({r['decode_tok_s']:.1f} tok/s, perplexity {perplexity[engine(r['runtime'])]:.3f})"
               for r in timed if r not in equal]
    why = (f"fastest decode at equal quality: {pick['decode_tok_s']:.1f} tok/s at {pick.get('threads')} threads"
           f" (others: {others or 'none'}){quality}" + (f"; not equal quality (perplexity over {EQUAL_QUALITY:g}x the best): {', '.join(dropped)}"
                                        if dropped else ""))
    return {"runtime": pick["runtime"], "threads": pick.get("threads"), "decode_tok_s": pick["decode_tok_s"], "why": why}
