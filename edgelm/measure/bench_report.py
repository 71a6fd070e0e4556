"""Bench reports: bench.json rendered as Markdown and a self-contained HTML page (inline CSS and SVG plots, no
network). The run report (edgelm.deliver.report) embeds these renderings."""

from __future__ import annotations

import html
import re
from pathlib import Path

from edgelm.core.metrics import metric

CSS = """body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:1.2em auto;max-width:1300px;color:#222;padding:0 1em}
table{border-collapse:collapse;margin:.6em 0 1.4em;font-size:13px}th,td{border:1px solid #ddd;padding:3px 8px;text-align:right}
th{background:#f3f3f3}td:nth-child(-n+2),th:nth-child(-n+2),td.l{text-align:left}.skip{color:#a60}.err{color:#b00}.ok{color:#080}
.muted{color:#666;font-size:12px}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}svg{max-width:100%;height:auto}"""


LATENCY_COLS = ["artifact", "runtime", "threads", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "n", "import_ms",
                "load_ms", "first_ms", "peak_rss_mb", "size_mb"]


DECODER_COLS = ["ttft_ms", "prefill_tok_s", "decode_tok_s"]
SPECULATIVE_COLS = ["decoding", "generated_tokens", "acceptance_rate", "tokens_per_call", "speculative_speedup",
                    "tokens_identical"]



def fmt(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)



def latency_table(bench: dict, case: str) -> tuple[list[str], list[list[str]]]:
    rows = [r for r in bench["rows"] if r.get("case") == case and "p50_ms" in r]
    cols = LATENCY_COLS + (DECODER_COLS if any("ttft_ms" in r for r in rows) else []) + (
        ["rounds"] if any("rounds" in r for r in rows) else [])
    if any("decoding" in r for r in rows):
        cols = cols[:3] + SPECULATIVE_COLS[:1] + cols[3:] + SPECULATIVE_COLS[1:]
    if any(r.get("accuracy") is not None for r in rows):
        cols = cols + ["accuracy"]
    return [title(c) for c in cols], [[fmt(r.get(k)) for k in cols] for r in rows]



def title(key: str) -> str:
    """Column header of a metric: its short label and unit from the vocabulary (`p50 ms`, `size MB`)."""
    entry = metric(key)
    return entry.title() if entry else key



def problem_table(bench: dict) -> tuple[list[str], list[list[str]]]:
    rows = [r for r in bench["rows"] if "skipped" in r or "error" in r]
    return ["artifact", "runtime", "threads", "case", "status"], [
        [r["artifact"], r["runtime"], fmt(r.get("threads")), r.get("case", "all"),
         ("skipped: " + r["skipped"]) if "skipped" in r else ("error: " + r["error"])] for r in rows]



def speedup_table(bench: dict) -> tuple[list[str], list[list[str]]]:
    rows = []
    for c in bench.get("comparisons", []):
        if "ratio" in c:
            ratio = c["ratio"]
            rows.append([_versus(c, bench), c["runtime"], fmt(c.get("threads")), c["case"], fmt(c["baseline_p50_ms"]),
                         fmt(c["candidate_p50_ms"]), f"{ratio['median']:.3f}×", f"{ratio['p10']:.3f}–{ratio['p90']:.3f}", str(ratio["n"])])
        else:
            rows.append([c["artifact"], c["runtime"], "–", c.get("case", "all"), "–", "–",
                         "skipped: " + c.get("skipped", c.get("error", "")), "–", "–"])
    header = ["artifact", "runtime", "threads", "case", f"baseline ({bench.get('baseline')}) p50 ms", "artifact p50 ms",
              "speedup (median of pairs)", "p10–p90", "pairs"]
    return header, rows



def _versus(comparison: dict, bench: dict) -> str:
    """The artifact, naming its reference when it is an extra one (e.g. the stock toolchain's int8)."""
    extra = comparison.get("baseline") not in (None, bench.get("baseline"))
    return comparison["artifact"] + (f" (vs {comparison['baseline']})" if extra else "")


def case_title(case: dict) -> str:
    if case["kind"] == "data":
        return (f"{case['label']} — {case['samples']} sentences, one per call at their own length "
                f"(mean {case['seq_len_mean']}, p50 {case['seq_len_p50']}, p90 {case['seq_len_p90']}, max {case['seq_len_max']} tokens)"
                + (", padded to the longest" if case.get("padded") else ""))
    if case["kind"] == "decode":
        return f"{case['label']} — greedy decoding: {case['prompt_len']}-token prompt, {case['new_tokens']} new tokens"
    if case["kind"] == "lookup":
        spec = case["speculative"]
        return (f"{case['label']} — greedy vs {spec['method']} speculative decoding (up to {spec['draft_tokens']} draft "
                f"tokens, n-grams {spec['ngram_min']}–{spec['ngram_max']}) of {case['prompts']} prompts from "
                f"{case['source']} (mean {case['prompt_len_mean']} tokens), to EOS or {case['new_tokens']} new tokens; "
                "decode tok/s = tokens after the first / decode time, summed over the prompts")
    return f"{case['label']} — fixed shape batch {case['batch']} × {case['seq_len']} tokens"



def machine_line(bench: dict) -> str:
    m, v = bench["machine"], bench["versions"]
    return (f"{m['cpu_model']} ({', '.join(m['flags'])}); {m['usable_cores']} usable / {m['logical_cores']} logical cores, "
            f"{m['memory_gb']} GB; load avg {m['load_avg_1m']} at start; {m['platform']}; Python {m['python']}; "
            + ", ".join(f"{k} {val}" for k, val in v.items()))



def md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    if not rows:
        return []
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows] + [""]



def bench_markdown(bench: dict, level: int = 1) -> str:
    h = "#" * level
    s = bench["settings"]
    lines = [f"{h} edgelm bench", "", f"Machine: {machine_line(bench)}", "",
             f"Settings: budget {s['seconds']} s per case (stop when the median moves < {s['rel_tol'] * 100:g}%), "
             f"warmup {s['warmup']}, min {s['min_repeats']} runs; each runtime in a fresh process.", ""]
    for case in bench["cases"]:
        lines += [f"{h}# {case_title(case)}", "", *md_table(*latency_table(bench, case["label"]))]
    header, rows = speedup_table(bench)
    if rows:
        lines += [f"{h}# Speedup against {bench.get('baseline')} (interleaved pairs)", "", *md_table(header, rows)]
    header, rows = problem_table(bench)
    if rows:
        lines += [f"{h}# Skipped or failed", "", *md_table(header, rows)]
    return "\n".join(lines) + "\n"



def html_table(header: list[str], rows: list[list[str]]) -> str:
    if not rows:
        return ""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)

    def cell(text: str) -> str:
        if text in ("✅", "❌"):  # headless/minimal fonts lack emoji: say it in words
            return f'<td class="{"ok" if text == "✅" else "err"}">{"pass" if text == "✅" else "FAIL"}</td>'
        numeric = re.fullmatch(r"[-+–0-9.,×x% ]+", text) is not None
        cls = "l skip" if text.startswith("skipped") else "l err" if text.startswith("error") else "" if numeric else "l"
        return f'<td class="{cls}">{html.escape(text)}</td>' if cls else f"<td>{html.escape(text)}</td>"

    body = "".join("<tr>" + "".join(cell(c) for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"



def bench_html_body(bench: dict, level: int = 1) -> str:
    from edgelm.measure.plots import latency_distribution, tradeoff

    h = f"h{level + 1}"
    s = bench["settings"]
    parts = [f'<p class="muted">Measured on {html.escape(machine_line(bench))}. Budget {s["seconds"]} s per case, '
             f'stop once the median moves &lt; {s["rel_tol"] * 100:g}%; warmup {s["warmup"]}; each runtime in a fresh process; '
             f'created {html.escape(bench["created"])}.</p>']
    header, rows = speedup_table(bench)
    if rows:
        parts += [f"<{h}>Speedup against <code>{html.escape(str(bench.get('baseline')))}</code> (interleaved pairs)</{h}>",
                  html_table(header, rows)]
    for case in bench["cases"]:
        case_rows = [r for r in bench["rows"] if r.get("case") == case["label"] and "p50_ms" in r]
        parts += [f"<{h}>{html.escape(case_title(case))}</{h}>", html_table(*latency_table(bench, case["label"]))]
        for svg in (latency_distribution(case_rows, f"latency distribution — {case['label']}"),
                    tradeoff(case_rows, f"size / latency{' / accuracy' if any(r.get('accuracy') for r in case_rows) else ''} — {case['label']}")):
            if svg:
                parts.append(f"<figure>{svg}</figure>")
    header, rows = problem_table(bench)
    if rows:
        parts += [f"<{h}>Skipped or failed</{h}>", html_table(header, rows)]
    return "\n".join(parts)



def page(title: str, body: str, extra_css: str = "") -> str:
    return (f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>{html.escape(title)}</title>"
            f"<style>{CSS}{extra_css}</style></head><body><h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n")



def write_bench_reports(bench: dict, folder: Path, stem: str = "bench") -> list[Path]:
    folder = Path(folder)
    md, page_path = folder / f"{stem}.md", folder / f"{stem}.html"
    md.write_text(bench_markdown(bench))
    page_path.write_text(page("edgelm bench", bench_html_body(bench)))
    return [md, page_path]
