"""Console lines: one per stage with its figures from the metric vocabulary; third-party log records dropped
unless verbose; no progress display (and so no blank line) off a terminal."""

import logging
import os

from edgelm.core import ui


def test_a_stage_line_carries_the_setting_and_the_figures_that_matter(capsys, monkeypatch):
    monkeypatch.delenv("EDGELM_QUIET", raising=False)
    metrics = {"quantization": {"method": "int8-dynamic"}, "size_mb": 22.888, "compression": 3.948,
               "accuracy_drop_pt": 0.6, "parity": {"ok": True}, "size_mb_float": 90.4}
    ui.stage_finished("02-quantize", metrics, 12.34)
    line = capsys.readouterr().err.strip()
    assert line == "✓ 02-quantize   int8-dynamic  22.9 MB  3.95× smaller  Δacc -0.6 pt  12.3 s"


def test_per_runtime_figures_show_the_best_runtime_and_other_figures_fill_in():
    assert ui.stage_figures({"speedup": {"ort-cpu": 1.5, "ort-mobile": 2.25}}) == ["2.25× faster (ort-mobile)"]
    assert ui.stage_figures({"fidelity_cosine_mean": 0.99361, "fidelity_cosine_min": 0.97}) == [
        "fidelity cosine mean 0.9936", "fidelity cosine min 0.9700"]
    assert ui.number(-0.0, "pt") == "0.0" and ui.number(0.084, "MB") == "0.084" and ui.number(22713216) == "22,713,216"


def test_quiet_drops_stage_lines(capsys, monkeypatch):
    monkeypatch.setenv("EDGELM_QUIET", "1")
    ui.stage_started("01-export")
    ui.info("anything")
    assert capsys.readouterr().err == ""


def test_a_progress_display_off_a_terminal_prints_nothing(capsys, monkeypatch):
    monkeypatch.delenv("EDGELM_QUIET", raising=False)
    with ui.step("exporting") as status:
        status("half way")
    list(ui.track(range(3), "scoring"))
    assert capsys.readouterr().err == ""  # a stopped rich display used to leave a blank line


def test_third_party_records_pass_only_when_verbose(monkeypatch):
    record = logging.LogRecord("ort_format_model.utils", logging.INFO, "utils.py", 1, "Created config in /x", None, None)
    ours = logging.LogRecord("edgelm.export", logging.INFO, "x.py", 1, "ours", None, None)
    error = logging.LogRecord("onnxruntime", logging.ERROR, "x.py", 1, "broken", None, None)
    keep = ui._EdgelmOnly()
    monkeypatch.delenv("EDGELM_VERBOSE", raising=False)
    assert not keep.filter(record) and keep.filter(ours) and keep.filter(error)
    monkeypatch.setenv("EDGELM_VERBOSE", "1")
    monkeypatch.delenv("EDGELM_QUIET", raising=False)
    assert keep.filter(record)


def test_a_stage_line_keeps_to_100_columns(capsys, monkeypatch):
    monkeypatch.delenv("EDGELM_QUIET", raising=False)
    metrics = {"runtime": "ort-mobile", "fidelity_cosine_mean": 0.99361, "fidelity_cosine_min": 0.9772,
               "fidelity_cosine_p05": 0.9907}
    ui.stage_finished("03-eval", metrics, 63.3)
    line = capsys.readouterr().err.rstrip("\n")
    assert len(line) <= 100 and "fidelity cosine mean 0.9936" in line and line.endswith("63.3 s")


def test_plain_tqdm_bars_of_libraries_are_silenced_unless_verbose():
    import subprocess
    import sys

    code = ("from edgelm.core.ui import quiet_libraries; quiet_libraries()\n"
            "from tqdm.auto import tqdm\nfor _ in tqdm(range(3), desc='converting'): pass\n")
    env = {k: v for k, v in os.environ.items() if k not in ("TQDM_DISABLE", "EDGELM_VERBOSE", "EDGELM_QUIET")}
    quiet = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    loud = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**env, "EDGELM_VERBOSE": "1"})
    assert "converting" not in quiet.stderr and "converting" in loud.stderr
