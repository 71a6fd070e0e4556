"""tools/student_compare.py: the issue-25 table reads each figure from the stage that measured it (fine-tune,
eval, export / quantize parity, the interleaved bench) and names what is missing instead of inventing it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "tools"))

import student_compare as sc  # noqa: E402


def stage(folder: Path, metrics: dict) -> None:
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({"metrics": metrics}))


def bench_json() -> dict:
    case = "sst2/dev.tsv x200"
    row = lambda name, p50, mb: {"artifact": name, "runtime": "ort-mobile", "threads": 1, "case": case,  # noqa: E731
                                 "p50_ms": p50, "size_mb": mb}
    ratio = lambda name, ref, x, *spread: {"artifact": name, "baseline": ref, "runtime": "ort-mobile",  # noqa: E731
                                           "case": case, "ratio": {"median": x, **dict(zip(("p10", "p90"), spread))}}
    return {"cases": [{"label": case}], "settings": {"runtimes": ["ort-mobile"], "threads": [1], "max_samples": 200,
                                                     "data": "dev.tsv"},
            "machine": {"cpu_model": "cpu", "usable_cores": 2, "load_avg_1m": 1.5},
            "rows": [row(sc.STOCK, 8.0, 23.0), row(sc.BASELINE, 6.0, 22.9), row("adapter-int8", 6.5, 23.6),
                     row("bilstm-int8", 0.4, 2.6)],
            "comparisons": [ratio(sc.BASELINE, sc.STOCK, 1.1), ratio("adapter-int8", sc.BASELINE, 0.92), ratio("adapter-int8", sc.STOCK, 1.2),
                            ratio("bilstm-int8", sc.BASELINE, 15.0), ratio("bilstm-int8", sc.STOCK, 20.0, 17.0, 23.5)]}


def test_table_reads_each_figure_from_its_stage(tmp_path):
    lora, adapter = tmp_path / "lora-bilstm", tmp_path / "adapter"
    stage(lora / "01-finetune", {"trainable_params": 812162, "eval_accuracy": 88.5})
    stage(lora / "02-export", {"parity": {"onnx": {"max_abs_diff": 2e-6}, "ort": {"max_abs_diff": 3e-6}}})
    stage(lora / "03-quantize", {"size_mb": 22.9, "parity": {"ok": True, "figures": {"top1_agreement": 0.99}}})
    stage(lora / "04-eval", {"accuracy": 88.0, "reference_accuracy": 88.5, "accuracy_drop_pt": 0.5, "params": 1})
    stage(lora / "05-distill", {"params": 2_500_000})
    stage(lora / "06-export", {"parity": {"onnx": {"max_abs_diff": 1e-6}}})
    stage(lora / "07-quantize", {"size_mb": 2.6, "parity": {"ok": False, "figures": {"top1_agreement": 0.9}}})
    stage(lora / "08-eval", {"accuracy": 85.1, "reference_accuracy": 88.5, "accuracy_drop_pt": 3.4})
    stage(adapter / "01-finetune", {"trainable_params": 743810, "eval_accuracy": 88.1})
    rows = sc.collect("sst2", {"lora-bilstm": lora, "adapter": adapter}, bench_json())
    by = {r["model"]: r for r in rows}
    assert [r["model"] for r in rows][0].startswith("stock") and by[rows[0]["model"]]["p50_ms"] == 8.0
    student = by["BiLSTM student, int8"]
    assert (student["trainable_params"], student["int8_accuracy"], student["accuracy_drop_pt"]) == (2_500_000, 85.1, 3.4)
    assert student["float_accuracy"] is None  # the student's epoch is picked on held-out rows: no eval-data figure
    assert (student["vs_lora_int8"], student["vs_stock_int8"], student["int8_size_mb"]) == (15.0, 20.0, 2.6)
    assert student["vs_stock_p10_p90"] == "17–23.5" and by["MiniLM + LoRA (merged), int8"]["vs_stock_p10_p90"] is None
    assert student["quantize_parity"] == "FAIL (top1_agreement 0.9)" and "onnx max|diff| 1e-06" == student["export_parity"]
    lora_row, adapter_row = by["MiniLM + LoRA (merged), int8"], by["MiniLM + bottleneck adapters, int8"]
    assert (lora_row["vs_lora_int8"], lora_row["vs_stock_int8"], lora_row["p50_ms"]) == (None, 1.1, 6.0)
    assert lora_row["float_accuracy"] == 88.5
    assert adapter_row["int8_accuracy"] is None and adapter_row["export_parity"] == "–"  # not measured: said so
    text = sc.markdown("sst2", rows, bench_json())
    assert "| BiLSTM student, int8 | 2,500,000 |" in text and "| 20.0 |" in text and "load 1.5" in text
