"""The bundle self-test: golden inputs written at bundle time from the shipped files, replayed by the consumer."""

import json
import shutil

import pytest

from edgelm.core.io import sha256_file
from edgelm.deliver.consumer import main
from edgelm.deliver.selftest import GOLDEN_TEXTS, SELF_TEST_FILE, case_mismatch
from edgelm.deliver.snippets import render_all
from edgelm.verify.tolerances import BUNDLE_SELF_TEST
from tests.deliver.runs import tiny_run


def rehash(bundle, name: str) -> None:
    """Record a deliberately edited file's new hash, so the self-test (not the sha check) meets the edit."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"][name] = {"sha256": sha256_file(bundle / name), "bytes": (bundle / name).stat().st_size}
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def edited_copy(kind, tiny_model, tmp_path_factory, tmp_path, edit):
    copy = tmp_path / "bundle"
    shutil.copytree(tiny_run(kind, tiny_model, tmp_path_factory)["bundle"], copy)
    spec = json.loads((copy / SELF_TEST_FILE).read_text())
    edit(spec["cases"][0])
    (copy / SELF_TEST_FILE).write_text(json.dumps(spec))
    rehash(copy, SELF_TEST_FILE)
    return copy


@pytest.mark.parametrize("kind", ["classifier", "embedder", "generator"])
def test_every_bundle_carries_golden_outputs_with_tolerances(kind, tiny_model, tmp_path_factory, capsys):
    bundle = tiny_run(kind, tiny_model, tmp_path_factory)["bundle"]
    manifest = json.loads(open(f"{bundle}/manifest.json").read())
    spec = json.loads(open(f"{bundle}/{SELF_TEST_FILE}").read())
    assert SELF_TEST_FILE in manifest["files"] and manifest["bundle"]["self_test"]["tolerances"] == BUNDLE_SELF_TEST
    assert spec["tolerances"] == BUNDLE_SELF_TEST and [c["text"] for c in spec["cases"]] == GOLDEN_TEXTS[manifest["task"]]
    key = {"classifier": "logits", "embedder": "embedding", "generator": "greedy_tokens"}[kind]
    assert all(c["input_ids"] and c[key] for c in spec["cases"])
    assert main([bundle, "--self-test"]) == 0
    assert capsys.readouterr().out.startswith("self-test passed: 3/3 golden inputs reproduce")


@pytest.mark.parametrize("kind, edit, named", [
    ("classifier", lambda c: c.update(label_id=1 - c["label_id"], label="OTHER"), "label 'LABEL_"),
    ("classifier", lambda c: c["logits"].__setitem__(0, c["logits"][0] + 0.2), "logits max_abs_diff 0.2"),
    ("embedder", lambda c: c["embedding"].__setitem__(slice(None), [-x for x in c["embedding"]]), "embedding cosine -1.0"),
    ("generator", lambda c: c["input_ids"].append(7), "token ids (tokenizer drift) differ at position"),
    ("generator", lambda c: c["first_logits"]["values"].__setitem__(0, 99.0), "first-step logits max_abs_diff"),
])
def test_a_mismatch_exits_3_naming_the_input_and_the_figure(kind, edit, named, tiny_model, tmp_path_factory, tmp_path, capsys):
    copy = edited_copy(kind, tiny_model, tmp_path_factory, tmp_path, edit)
    assert main([str(copy), "--self-test"]) == 3
    out = capsys.readouterr()
    assert out.out.startswith("self-test FAILED: 2/3") and "input 1 (" in out.err and named in out.err, out.err


def test_a_tampered_golden_file_is_refused_before_the_self_test(tiny_model, tmp_path_factory, tmp_path, capsys):
    copy = tmp_path / "bundle"
    shutil.copytree(tiny_run("classifier", tiny_model, tmp_path_factory)["bundle"], copy)
    with open(copy / SELF_TEST_FILE, "a") as fh:
        fh.write(" ")
    assert main([str(copy), "--self-test"]) == 2
    assert "selftest.json: sha256 mismatch" in capsys.readouterr().err


def test_a_bundle_without_a_self_test_says_so(tiny_model, tmp_path_factory, tmp_path, capsys):
    copy = tmp_path / "bundle"
    shutil.copytree(tiny_run("classifier", tiny_model, tmp_path_factory)["bundle"], copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    del manifest["files"][SELF_TEST_FILE]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert main([str(copy), "--self-test"]) == 2
    assert "has no self-test" in capsys.readouterr().err


def test_equal_outputs_reproduce_and_shapes_that_differ_do_not():
    case = {"input_ids": [1, 2], "embedding": [0.6, 0.8]}
    assert case_mismatch("feature-extraction", case, dict(case), BUNDLE_SELF_TEST) is None
    assert "cosine 0.000000" in case_mismatch("feature-extraction", case, {**case, "embedding": [0.6]}, BUNDLE_SELF_TEST)
    assert "expected nothing, got 3" in case_mismatch("feature-extraction", case, {**case, "input_ids": [1, 2, 3]}, BUNDLE_SELF_TEST)


@pytest.mark.parametrize("task, file", [("sequence-classification", "TextClassifier"), ("feature-extraction", "SentenceEmbedder"),
                                        ("causal-lm", "TextGenerator")])
def test_kotlin_and_swift_snippets_expose_self_test(task, file):
    manifest = {"task": task, "bundle": {"model": "model.onnx", "self_test": {"file": SELF_TEST_FILE}},
                "inputs": [{"name": "input_ids", "dtype": "int64", "shape": ["batch", "sequence"]}],
                "outputs": [{"name": "logits", "dtype": "float32", "shape": ["batch", 2]}],
                "kv_cache": {"num_layers": 2, "num_kv_heads": 2, "head_dim": 8}, "files": {}}
    files = render_all(manifest)
    for snippet in (files[f"{file}.kt"], files[f"{file}.swift"]):
        assert "selfTest(" in snippet and f'"{SELF_TEST_FILE}"' in snippet
        assert snippet.count("{") == snippet.count("}") and snippet.count("(") == snippet.count(")")
