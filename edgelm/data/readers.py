"""Datasets for training, calibration and evaluation: CSV/TSV/JSONL/TXT files and HF datasets (`name:split`).

Columns are detected (`sentence`, `text`, ... / `label`, `score`, `class`, ...) and overridable. With no such label
column, a column that looks like labels (every row has one, at most 20 distinct values and fewer than half the rows)
is used, and the run says so. Label ids: string labels are numbered in sorted order (`ABBR`=0, `DESC`=1, ...);
integer labels that start at 0 keep their value as id (ordinal); other integers (e.g. stars 1-5) are numbered in
sorted order. These names, in id order, are what labels.txt and the manifest list.
Calibration text for label-free stages needs no download: it comes from the English help text that ships with
Python (pydoc_data).
"""

from __future__ import annotations

import csv
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from edgelm.core.errors import EdgelmError

TEXT_COLUMNS = ("sentence", "text", "content", "review", "document", "sentence1", "question", "prompt", "input", "tweet")
LABEL_COLUMNS = ("label", "labels", "class", "target", "category", "sentiment", "score", "rating", "grade", "stars",
                 "intent", "topic", "emotion", "polarity", "y", "gold", "answer_label", "coarse_label", "fine_label")
LOOKALIKE_MAX_LABELS = 20
MAX_FILE_BYTES = 4 * 2**30
MAX_SEED = 2**32  # numpy's limit; torch's is larger
DATA_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json", ".txt")


class DataConfig(BaseModel):
    """Where examples come from. A bare string in a recipe means `path`."""

    model_config = ConfigDict(extra="forbid")
    path: str = Field(description="CSV/TSV/JSONL/TXT file, or an HF dataset as name:split")
    text_column: str | None = Field(None, description="column holding the text (auto-detected when empty)")
    label_column: str | None = Field(None, description="column holding the label (auto-detected when empty)")
    max_samples: int | None = Field(None, gt=0, description="keep at most this many examples (random, seeded)")
    seed: int = Field(0, ge=0, lt=MAX_SEED, description="seed for sampling and splits")


@dataclass
class Examples:
    texts: list[str]
    labels: list[int] | None = None
    label_names: list[str] | None = None
    source: str = ""
    columns: dict[str, list[Any]] = field(default_factory=dict)  # every raw column, for prompt/completion data
    label_column: str | None = None
    ordinal: bool = False  # integer labels: their order means something (quadratic weighted kappa applies)

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices) -> "Examples":
        indices = list(indices)
        return Examples(
            texts=[self.texts[i] for i in indices],
            labels=[self.labels[i] for i in indices] if self.labels is not None else None,
            label_names=self.label_names, source=self.source,
            columns={k: [v[i] for i in indices] for k, v in self.columns.items()},
            label_column=self.label_column, ordinal=self.ordinal,
        )

    def split(self, eval_fraction: float = 0.1, seed: int = 0) -> tuple["Examples", "Examples"]:
        order = list(range(len(self)))
        random.Random(seed).shuffle(order)
        n_eval = max(1, int(round(len(order) * eval_fraction)))
        return self.subset(sorted(order[n_eval:])), self.subset(sorted(order[:n_eval]))

    def require_labels(self, num_labels: int | None = None) -> "Examples":
        """These examples with labels; with num_labels, every label must index the model's head."""
        if self.labels is None:
            raise EdgelmError(f"{self.source}: no label column found; name it with --label-column")
        if num_labels is not None and self.labels:
            top = max(self.labels)
            if top >= num_labels:
                name = self.label_names[top] if self.label_names and top < len(self.label_names) else top
                raise EdgelmError(f"{self.source}: label {name!r} is class {top}, but the model's head has {num_labels} "
                                  f"classes (0..{num_labels - 1}); fix the labels or use a model with {top + 1} labels")
        return self


def as_config(spec: DataConfig | str | dict, **overrides) -> DataConfig:
    if isinstance(spec, DataConfig):
        return spec.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    if isinstance(spec, str):
        spec = {"path": spec}
    return DataConfig(**{**spec, **{k: v for k, v in overrides.items() if v is not None}})


def load_examples(spec: DataConfig | str | dict, **overrides) -> Examples:
    cfg = as_config(spec, **overrides)
    rows, source = _read_rows(cfg.path)
    if not rows:
        raise EdgelmError(f"{source}: no examples (empty file)")
    examples = _to_examples(rows, cfg, source)
    if cfg.max_samples and len(examples) > cfg.max_samples:
        order = list(range(len(examples)))
        random.Random(cfg.seed).shuffle(order)
        examples = examples.subset(sorted(order[: cfg.max_samples]))
    return examples


def check_data_source(spec: DataConfig | None, what: str = "data") -> None:
    """Fail before any stage runs when a local data file named by the user does not exist."""
    if spec is None:
        return
    path = Path(spec.path).expanduser()
    if path.suffix.lower() in DATA_SUFFIXES and not path.exists():
        raise EdgelmError(f"{what}: {spec.path}: no such data file")
    if path.exists() and path.is_file() and path.suffix.lower() not in DATA_SUFFIXES:
        raise EdgelmError(f"{what}: {spec.path}: unsupported data format {path.suffix!r}; use .csv, .tsv, .jsonl or .txt")


def load_text(path: str | Path) -> str:
    """A whole text file (perplexity, calibration), strictly UTF-8."""
    path = Path(path)
    if not path.is_file():
        raise EdgelmError(f"{path}: no such file")
    return _read_utf8(path)


# --- readers -------------------------------------------------------------------------------------------------
def _read_rows(spec: str) -> tuple[list[dict], str]:
    path = Path(spec).expanduser()
    if path.is_file():
        if path.stat().st_size > MAX_FILE_BYTES:
            raise EdgelmError(f"{path}: file is larger than {MAX_FILE_BYTES >> 30} GiB; sample it first")
        suffix = path.suffix.lower()
        reader = {".csv": _read_delimited, ".tsv": _read_delimited, ".jsonl": _read_jsonl, ".json": _read_jsonl,
                  ".txt": _read_lines}.get(suffix)
        if reader is None:
            raise EdgelmError(f"{path}: unsupported data format {suffix!r}; use .csv, .tsv, .jsonl or .txt")
        return reader(path), str(path)
    if path.is_dir() or ":" in spec or "/" in spec and not path.suffix:
        return _read_hf_dataset(spec), spec
    raise EdgelmError(f"{spec}: no such data file")


def _read_utf8(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise EdgelmError(f"{path}: not UTF-8 text (byte {exc.start}); re-encode it as UTF-8") from None


def _read_delimited(path: Path) -> list[dict]:
    text = _read_utf8(path)
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    csv.field_size_limit(2**31 - 1)  # the default 128 KiB refuses a long document in one cell; the file is in memory anyway
    reader = csv.reader(text.splitlines(), delimiter=delimiter, quoting=csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL)
    try:
        lines = [r for r in reader if r]
    except csv.Error as exc:
        raise EdgelmError(f"{path}:{reader.line_num}: not valid {'TSV' if delimiter == chr(9) else 'CSV'} ({exc})") from None
    if not lines:
        return []
    header = [h.strip() for h in lines[0]]
    rows = []
    for lineno, values in enumerate(lines[1:], start=2):
        if len(values) != len(header):
            raise EdgelmError(f"{path}:{lineno}: {len(values)} fields where the header has {len(header)}")
        rows.append(dict(zip(header, values)))
    return rows


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    for lineno, line in enumerate(_read_utf8(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise EdgelmError(f"{path}:{lineno}: invalid JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise EdgelmError(f"{path}:{lineno}: each line must be a JSON object")
        rows.append(row)
    return rows


def _read_lines(path: Path) -> list[dict]:
    return [{"text": line.strip()} for line in _read_utf8(path).splitlines() if line.strip()]


def _read_hf_dataset(spec: str) -> list[dict]:
    name, _, split = spec.partition(":")
    try:
        import datasets

        ds = datasets.load_dataset(name, split=split or "train")
    except Exception as exc:  # offline / unknown dataset / bad split: one line
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise EdgelmError(f"{spec}: cannot load HF dataset ({first}); offline, pass a local CSV/TSV/JSONL/TXT file") from None
    return [dict(r) for r in ds]


# --- columns -------------------------------------------------------------------------------------------------
def _pick(columns, wanted: str | None, candidates, what: str, source: str, required: bool) -> str | None:
    if wanted:
        if wanted not in columns:
            raise EdgelmError(f"{source}: {what} column {wanted!r} not found (columns: {', '.join(columns)})")
        return wanted
    lower = {c.lower(): c for c in columns}
    for cand in candidates:
        if cand in lower:
            return lower[cand]
    if required:
        raise EdgelmError(f"{source}: no {what} column found among {', '.join(columns)}; name it with --{what}-column")
    return None


def _lookalike_label_column(rows: list[dict], columns, text_col: str) -> str | None:
    """The first column (not the text) whose every row holds a short value and that has few distinct values."""
    for column in columns:
        values = [r.get(column) for r in rows]
        if column != text_col and _looks_like_labels(values):
            return column
    return None


def _looks_like_labels(values: list) -> bool:
    if not all(isinstance(v, (int, str)) and not isinstance(v, bool) and str(v).strip() for v in values):
        return False
    distinct = {str(v).strip() for v in values}
    return 1 < len(distinct) <= LOOKALIKE_MAX_LABELS and len(distinct) < len(values) / 2


_ANNOUNCED: set[tuple[str, str]] = set()


def _announce_lookalike(source: str, column: str, values: list) -> None:
    """Say once per file that an unnamed column is taken as the labels."""
    if (source, column) not in _ANNOUNCED:
        _ANNOUNCED.add((source, column))
        from edgelm.core.ui import info

        info(f"{source}: using column {column!r} as labels ({len({str(v).strip() for v in values})} distinct values); "
             f"name another with --label-column")


def _label_column(rows: list[dict], columns, cfg: DataConfig, text_col: str, source: str) -> str | None:
    named = _pick(columns, cfg.label_column, LABEL_COLUMNS, "label", source, required=False)
    if named is not None:
        return named
    found = _lookalike_label_column(rows, columns, text_col)
    if found is not None:
        _announce_lookalike(source, found, [r.get(found) for r in rows])
    return found


def _to_examples(rows: list[dict], cfg: DataConfig, source: str) -> Examples:
    columns = list(rows[0].keys())
    text_col = _pick(columns, cfg.text_column, TEXT_COLUMNS, "text", source, required=True)
    label_col = _label_column(rows, columns, cfg, text_col, source)
    texts = []
    for i, row in enumerate(rows):
        value = row.get(text_col)
        if not isinstance(value, str):
            raise EdgelmError(f"{source}: row {i + 1}: text column {text_col!r} is {type(value).__name__}, not text")
        texts.append(value)
    labels, names, ordinal = (None, None, False) if label_col is None else \
        _encode_labels([r.get(label_col) for r in rows], source, label_col)
    return Examples(texts, labels, names, source, {c: [r.get(c) for r in rows] for c in columns},
                    label_col if labels is not None else None, ordinal)


def _encode_labels(raw: list, source: str, column: str) -> tuple[list[int], list[str], bool]:
    """(ids, names in id order, ordinal): see the module docstring for the order."""
    if all(isinstance(v, int) and not isinstance(v, bool) for v in raw) or all(isinstance(v, str) and v.strip().lstrip("-").isdigit() for v in raw):
        return (*_encode_integers([int(v) for v in raw], source, column), True)
    if all(isinstance(v, str) and v.strip() for v in raw):
        return (*_index_by_sorted_name([v.strip() for v in raw]), False)
    bad = next((v for v in raw if not isinstance(v, (int, str)) or isinstance(v, bool) or (isinstance(v, str) and not v.strip())), None)
    if bad is None:
        raise EdgelmError(f"{source}: label column {column!r} mixes integers and names; use one kind of label")
    raise EdgelmError(f"{source}: label column {column!r} has value {bad!r}; labels must be integers or names")


def _encode_integers(ints: list[int], source: str, column: str) -> tuple[list[int], list[str]]:
    """0-based integers keep their value as id; others (1-5 stars, 10/20/30) are numbered in sorted order."""
    if min(ints) < 0:
        raise EdgelmError(f"{source}: label column {column!r} has negative value {min(ints)}; labels must be 0..N-1 or names")
    if min(ints) == 0:
        return ints, [str(i) for i in range(max(ints) + 1)]
    return _index_by_sorted_name(ints)


def _index_by_sorted_name(values: list) -> tuple[list[int], list[str]]:
    names = sorted(set(values))
    index = {n: i for i, n in enumerate(names)}
    return [index[v] for v in values], [str(n) for n in names]


# --- calibration text that needs no download ------------------------------------------------------------------
def calibration_texts(n: int = 128, min_chars: int = 200, max_chars: int = 2000, seed: int = 0) -> list[str]:
    """Paragraphs of English prose from Python's bundled documentation (pydoc_data.topics)."""
    from pydoc_data.topics import topics

    paragraphs = []
    for key in sorted(topics):
        for para in topics[key].split("\n\n"):
            para = " ".join(para.split())
            if len(para) >= min_chars and not para.startswith(("*", ">>>", "|")):
                paragraphs.append(para[:max_chars])
    random.Random(seed).shuffle(paragraphs)
    return paragraphs[:n]
