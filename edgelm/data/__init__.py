"""Data in: readers for CSV/TSV/JSONL/TXT/HF datasets, text/label column detection, calibration prose."""
