"""Corrupt and hostile input files: each one ends in exit 2 with one clear line, never a traceback.

Model folders are tiny random-init models (tests/tiny.py) with one thing broken; data files go through
`edgelm eval`; exported ONNX files are truncated or garbled after export.
"""

from __future__ import annotations

import json
import random
import shutil
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.reliability.helpers import assert_user_error, cli

FUZZ = settings(deadline=None, derandomize=True, max_examples=15)


def broken_copy(tiny_model, tmp_path, arch="bert", task=None):
    folder = tmp_path / f"broken-{arch}-{task or 'default'}"
    if folder.exists():
        shutil.rmtree(folder)
    shutil.copytree(tiny_model(arch, task), folder)
    return folder


def edit_config(folder, **changes):
    config = json.loads((folder / "config.json").read_text())
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    (folder / "config.json").write_text(json.dumps(config))


def info_refuses(folder, *args, expect=None):
    code, output = cli("info", folder, *args)
    return assert_user_error(code, output, expect)


# --- weights ---------------------------------------------------------------------------------------------
@given(fraction=st.floats(0.0, 0.999))
@FUZZ
def test_truncated_safetensors_at_any_length(fraction, tiny_model, tmp_path_factory):
    folder = broken_copy(tiny_model, tmp_path_factory.getbasetemp())
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: int(len(data) * fraction)])
    info_refuses(folder, expect="safetensors")


@given(header=st.one_of(st.binary(max_size=64), st.sampled_from([b"[1, 2]", b'{"w": 5}', b'{"w": {"dtype": "F32"}}',
                                                                 b'{"w": {"dtype": "F32", "shape": [1000], "data_offsets": [0, 4]}}',
                                                                 b'{"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}',
                                                                 b'{"w": {"dtype": "F32", "shape": [1], "data_offsets": "x"}}'])))
@FUZZ
def test_garbled_safetensors_header(header, tiny_model, tmp_path_factory):
    folder = broken_copy(tiny_model, tmp_path_factory.getbasetemp())
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 64)
    info_refuses(folder, expect="safetensors")


def test_safetensors_header_length_beyond_the_file(tiny_model, tmp_path):
    folder = broken_copy(tiny_model, tmp_path)
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", 2**62) + b"{}")
    info_refuses(folder, expect="safetensors")


def test_weights_that_do_not_fit_the_config(tiny_model, tmp_path):
    folder = broken_copy(tiny_model, tmp_path)
    edit_config(folder, intermediate_size=48)
    info_refuses(folder, expect="cannot load weights")


# --- GGUF --------------------------------------------------------------------------------------------------
@given(tail=st.binary(max_size=128))
@FUZZ
def test_gguf_with_a_bad_header(tail, tmp_path_factory):
    path = tmp_path_factory.getbasetemp() / "model.gguf"
    path.write_bytes(b"GGUF" + tail)
    info_refuses(path, expect="gguf")


@pytest.mark.parametrize("content", [b"", b"GGU", b"PK\x03\x04zipfile", b"\x00" * 64])
def test_gguf_with_a_bad_magic(content, tmp_path):
    path = tmp_path / "model.gguf"
    path.write_bytes(content)
    info_refuses(path, expect="gguf")


# --- tokenizer and config -----------------------------------------------------------------------------------
def test_missing_tokenizer(tiny_model, tmp_path):
    folder = broken_copy(tiny_model, tmp_path)
    for f in folder.glob("tokenizer*"):
        f.unlink()
    info_refuses(folder, expect="no tokenizer files")


def test_garbled_tokenizer(tiny_model, tmp_path):
    folder = broken_copy(tiny_model, tmp_path)
    (folder / "tokenizer.json").write_text('{"version": "1.0", "model": {"type": "Nope"')
    info_refuses(folder, expect="tokenizer")


@pytest.mark.parametrize("changes,expect", [
    ({"model_type": "foobarnet"}, "unknown or custom architecture"),
    ({"model_type": None, "architectures": ["FooModel"]}, "config.json"),
    ({"hidden_size": "wide"}, "config.json"),
    ({"num_attention_heads": [4]}, "config.json"),
], ids=["unknown-arch", "no-model-type", "text-hidden-size", "list-heads"])
def test_bad_config(changes, expect, tiny_model, tmp_path):
    folder = broken_copy(tiny_model, tmp_path)
    edit_config(folder, **changes)
    info_refuses(folder, expect=expect)


def test_config_that_is_not_json(tiny_model, tmp_path):
    folder = broken_copy(tiny_model, tmp_path)
    (folder / "config.json").write_bytes(b"\xff\xfe{not json")
    info_refuses(folder, expect="config.json")


@pytest.mark.parametrize("arch,task,asked,expect", [
    ("bert", None, "causal-lm", "pass --task feature-extraction"),
    ("bert", "sequence-classification", "causal-lm", "pass --task sequence-classification"),
    ("distilbert", None, "causal-lm", "cannot load weights for task 'causal-lm'"),
])
def test_wrong_task_for_the_head(arch, task, asked, expect, tiny_model):
    info_refuses(tiny_model(arch, task), "--task", asked, expect=expect)


# --- damaged edgelm bundle folders -----------------------------------------------------------------------------
@pytest.mark.parametrize("meta,expect", [
    ("[1, 2]", "not an edgelm bundle"),
    ('{"schema_version": 1}', "no 'task'"),
    ('{"task": "bogus", "model_dir": "."}', "not supported"),
    ('{"task": "feature-extraction", "model_dir": "../../nowhere"}', "does not exist"),
    ('{"task": "feature-extraction", "model_dir": ".", "history": "x"}', "wrong type"),
    ('{"task": "feature-extraction", "model_dir": ".", "extra": {"structure": [{"op": "drop", "path": "nope.3"}]}}', "structure"),
    ('{"task": "feature-extraction", "model_dir": ".", "extra": {"structure": [{"op": "zzz"}]}}', "structure op"),
    ("{truncated", "not a readable edgelm bundle"),
], ids=["list", "no-task", "bad-task", "dangling-model-dir", "history-type", "bad-structure-path", "unknown-op", "not-json"])
def test_damaged_bundle_metadata(meta, expect, tiny_model, tmp_path):
    folder = broken_copy(tiny_model, tmp_path)
    (folder / "edgelm.json").write_text(meta)
    info_refuses(folder, expect=expect)


# --- data files ----------------------------------------------------------------------------------------------
DATA_CASES = {
    "empty.tsv": (b"", "no examples"),
    "header-only.tsv": (b"label\tsentence\n", "no examples"),
    "ragged.tsv": (b"label\tsentence\n1\tgood movie\n0\tbad\textra\n", "3 fields where the header has 2"),
    "latin1.tsv": ("label\tsentence\n1\tcaf\u00e9 cr\u00e8me\n".encode("latin-1"), "not utf-8"),
    "random.tsv": (random.Random(0).randbytes(300), "not utf-8"),
    "bad.jsonl": (b'{"text": "a", "label": 1}\n{"text": "b", "label"\n', "invalid json"),
    "list.jsonl": (b'{"text": "a", "label": 1}\n[1, 2]\n', "json object"),
    "mixed.jsonl": (b'{"text": "a", "label": 1}\n{"text": "b", "label": "pos"}\n', "mixes integers and names"),
    "float-labels.jsonl": (b'{"text": "a", "label": 0.5}\n{"text": "b", "label": 1}\n', "labels must be integers or names"),
    "negative.tsv": (b"label\tsentence\n-1\tgood movie\n0\tbad film\n", "negative"),
    "out-of-range.tsv": (b"label\tsentence\n7\tgood movie\n0\tbad film\n", "label 7"),
    "no-text.csv": (b"label,score\n1,0.5\n", "no text column"),
    "text-is-number.jsonl": (b'{"text": 5, "label": 1}\n', "not text"),
    "model.parquet": (b"PAR1", "unsupported data format"),
}


@pytest.mark.parametrize("name", sorted(DATA_CASES))
def test_bad_data_file(name, tiny_model, tmp_path):
    content, expect = DATA_CASES[name]
    path = tmp_path / name
    path.write_bytes(content)
    code, output = cli("eval", tiny_model("bert", "sequence-classification"), "--data", path, "--metric", "accuracy",
                       "--runtime", "torch")
    assert_user_error(code, output, expect)


# --- absurd sizes ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("args,expect", [
    (["eval", "MODEL", "--data", "DATA", "--max-samples", "0"], "max_samples"),
    (["eval", "MODEL", "--data", "DATA", "--k-shot", "-1"], "k_shot"),
    (["finetune", "MODEL", "--data", "DATA", "-o", "OUT", "--batch-size", "0"], "batch_size"),
    (["finetune", "MODEL", "--data", "DATA", "-o", "OUT", "--max-length", "1"], "max_length"),
    (["export", "MODEL", "-o", "OUT", "--max-length", "0"], "max_length"),
    (["bench", "MODEL", "--shapes", "0x8"], "batch >= 1"),
    (["bench", "MODEL", "--shapes", "1x1000000"], "1000000"),
])
def test_absurd_sizes(args, expect, tiny_model, tmp_path):
    data = tmp_path / "d.tsv"
    data.write_text("label\tsentence\n1\tgood movie\n0\tbad film\n")
    subst = {"MODEL": tiny_model("bert", "sequence-classification"), "DATA": data, "OUT": tmp_path / "out"}
    code, output = cli(*[subst.get(a, a) for a in args])
    assert_user_error(code, output, expect)
    assert not (tmp_path / "out").exists()


# --- exported ONNX files that were truncated or modified after export -----------------------------------------------
@pytest.fixture(scope="module")
def exported(tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "exp"
    code, output = cli("export", tiny_model("bert", "sequence-classification"), "-o", out, "--no-optimize")
    assert code == 0, output
    return out


def damage(folder, how):
    onnx = folder / "model.onnx"
    data = bytearray(onnx.read_bytes())
    if how == "truncated":
        onnx.write_bytes(bytes(data[: len(data) // 2]))
    elif how == "garbled":
        rng = random.Random(0)
        for _ in range(64):
            data[rng.randrange(len(data))] = rng.randrange(256)
        onnx.write_bytes(bytes(data))
    else:
        onnx.unlink()


@pytest.mark.parametrize("how", ["truncated", "garbled", "deleted"])
@pytest.mark.parametrize("command", [
    ["quantize", "ART", "-o", "OUT", "--method", "int8-dynamic"],
    ["eval", "ART", "--data", "DATA", "--runtime", "ort-cpu"],
    ["bench", "ART", "--runtime", "ort-cpu", "--seconds", "0.1", "--shapes", "1x8"],
], ids=["quantize", "eval", "bench"])
def test_damaged_onnx_artifact(command, how, exported, tmp_path):
    folder = tmp_path / "art"
    shutil.copytree(exported, folder)
    damage(folder, how)
    data = tmp_path / "d.tsv"
    data.write_text("label\tsentence\n1\tgood movie\n0\tbad film\n")
    subst = {"ART": folder, "OUT": tmp_path / "out", "DATA": data}
    code, output = cli(*[subst.get(a, a) for a in command])
    assert_user_error(code, output, "model.onnx")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("content", ["[1]", '{"stages": "x"}', '{"stages": [1]}', "{cut", "\udcff"], ids=["list", "stages-text", "stages-ints", "not-json", "not-utf8"])
def test_report_on_a_damaged_run_json(content, tmp_path):
    (tmp_path / "run.json").write_bytes(content.encode("utf-8", "surrogateescape"))
    code, output = cli("report", tmp_path)
    assert_user_error(code, output, "run.json")
