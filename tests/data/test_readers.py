import pytest

from edgelm.data.readers import calibration_texts, load_examples
from edgelm.core.errors import EdgelmError


def write(tmp_path, name, text, mode="w"):
    path = tmp_path / name
    path.write_bytes(text) if isinstance(text, bytes) else path.write_text(text)
    return str(path)


def test_tsv_with_detected_columns(tmp_path):
    ex = load_examples(write(tmp_path, "d.tsv", "label\tsentence\n0\tbad film\n1\tgreat movie\n"))
    assert ex.texts == ["bad film", "great movie"] and ex.labels == [0, 1] and ex.label_names == ["0", "1"]


def test_csv_string_labels_and_overrides(tmp_path):
    path = write(tmp_path, "d.csv", 'review,verdict\n"good, really",pos\nawful,neg\n')
    ex = load_examples(path, text_column="review", label_column="verdict")
    assert ex.texts == ["good, really", "awful"] and ex.label_names == ["neg", "pos"] and ex.labels == [1, 0]


def test_jsonl_and_txt(tmp_path):
    ex = load_examples(write(tmp_path, "d.jsonl", '{"text": "a", "label": 1}\n\n{"text": "b", "label": 0}\n'))
    assert ex.texts == ["a", "b"] and ex.labels == [1, 0]
    txt = load_examples(write(tmp_path, "d.txt", "first line\n\nsecond line\n"))
    assert txt.texts == ["first line", "second line"] and txt.labels is None


def test_max_samples_is_seeded_and_split_is_disjoint(tmp_path):
    rows = "label\ttext\n" + "".join(f"{i % 2}\tsentence {i}\n" for i in range(100))
    path = write(tmp_path, "d.tsv", rows)
    a, b = load_examples(path, max_samples=10, seed=3), load_examples(path, max_samples=10, seed=3)
    assert a.texts == b.texts and len(a) == 10
    train, held = load_examples(path).split(0.2, seed=1)
    assert len(train) == 80 and len(held) == 20 and not set(train.texts) & set(held.texts)


@pytest.mark.parametrize("name,content,message", [
    ("empty.tsv", "", "no examples"),
    ("ragged.tsv", "label\ttext\n1\ta\textra\n", "3 fields where the header has 2"),
    ("nolabel.csv", "foo,bar\n1,2\n", "no text column"),
    ("latin1.txt", "caf\xe9\n".encode("latin-1"), "not UTF-8"),
    ("bad.jsonl", "{not json}\n", "invalid JSON"),
    ("d.parquet", "x", "unsupported data format"),
])
def test_bad_files_give_clear_errors(tmp_path, name, content, message):
    with pytest.raises(EdgelmError, match=message):
        load_examples(write(tmp_path, name, content))


def test_bad_labels(tmp_path):
    with pytest.raises(EdgelmError, match="negative"):
        load_examples(write(tmp_path, "d.tsv", "label\ttext\n-1\ta\n"))
    with pytest.raises(EdgelmError, match="must be integers or names"):
        load_examples(write(tmp_path, "d.jsonl", '{"text": "a", "label": 1.5}\n'))
    with pytest.raises(EdgelmError, match="no label column"):
        load_examples(write(tmp_path, "d.txt", "just text\n")).require_labels()


def test_calibration_text_needs_no_download():
    texts = calibration_texts(32)
    assert len(texts) == 32 and all(len(t) >= 200 for t in texts)
    assert calibration_texts(32) == texts


def test_real_sst2_dev(sst2_dir):
    ex = load_examples(str(sst2_dir / "dev.tsv"))
    assert len(ex) == 872 and sum(ex.labels) == 444


@pytest.mark.parametrize("column", ["score", "rating", "grade", "stars", "class", "intent", "category", "y"])
def test_more_label_column_names_are_detected(tmp_path, column):
    ex = load_examples(write(tmp_path, "d.csv", f"text,{column}\na,0\nb,3\nc,1\n"))
    assert ex.label_column == column and ex.labels == [0, 3, 1] and ex.label_names == ["0", "1", "2", "3"]
    assert ex.ordinal


def test_a_column_that_looks_like_labels_is_used_and_said(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("EDGELM_QUIET", raising=False)
    rows = "".join(f"answer {i},{'AB'[i % 2]},id{i}\n" for i in range(10))
    ex = load_examples(write(tmp_path, "d.csv", "text,verdict,row\n" + rows))
    assert ex.label_column == "verdict" and ex.label_names == ["A", "B"] and ex.labels[:3] == [0, 1, 0]
    said = " ".join(capsys.readouterr().err.split())  # rich wraps long lines at the terminal width
    assert "using column 'verdict' as labels (2 distinct values)" in said


@pytest.mark.parametrize("header,rows", [
    ("text,note", "".join(f"t{i},n{i}\n" for i in range(10))),  # as many values as rows: not labels
    ("text,tag", "a,x\nb,y\nc,x\nd,\n"),  # a row without a value
])
def test_columns_that_do_not_look_like_labels_stay_unlabelled(tmp_path, header, rows):
    assert load_examples(write(tmp_path, "d.csv", f"{header}\n{rows}")).labels is None


def test_string_labels_are_numbered_in_sorted_order(tmp_path):
    ex = load_examples(write(tmp_path, "d.tsv", "label\tquestion\nNUM\thow many?\nABBR\twhat is AI?\nLOC\twhere?\n"))
    assert ex.label_names == ["ABBR", "LOC", "NUM"] and ex.labels == [2, 0, 1] and not ex.ordinal


def test_integer_labels_from_one_are_numbered_in_order(tmp_path):
    ex = load_examples(write(tmp_path, "d.jsonl", "".join(f'{{"text": "t", "stars": {s}}}\n' for s in (5, 1, 3))))
    assert ex.label_names == ["1", "3", "5"] and ex.labels == [2, 0, 1] and ex.ordinal


@pytest.mark.real
def test_real_trec_labels():
    from tests.conftest import SHARED_DATA

    path = SHARED_DATA / "trec" / "test.tsv"
    if not path.is_file():
        pytest.skip(f"real data absent: {path}")
    ex = load_examples(str(path))
    assert ex.label_column == "label" and ex.label_names == ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"]
