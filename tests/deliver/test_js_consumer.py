"""The generated JS consumer, run for real under Node with onnxruntime-node, against the Python reference consumer:
same labels / embeddings / greedy tokens, the self-test passing in both, a tampered bundle refused by both."""

import json
import shutil

import pytest

from edgelm.deliver.consumer import main
from tests.deliver.js import NodeConsumer, agreement, node_folder
from tests.deliver.runs import tiny_run
from tests.deliver.test_selftest import rehash

TEXTS = ["a great fun movie", "the plot was boring and bad", "ok"]
PROMPTS = ["the movie was", "a great"]
SAME_KERNELS_ATOL = 1e-4  # one artifact, onnxruntime's CPU kernels in both: only summation order may differ


@pytest.fixture(scope="module")
def node():
    return NodeConsumer(node_folder())


def test_node_labels_and_logits_match_python(node, tiny_model, tmp_path_factory):
    bundle = tiny_run("classifier", tiny_model, tmp_path_factory)["bundle"]
    figures = agreement(node, bundle, TEXTS)
    assert figures["label_agreement"] == 1.0 and figures["logits_max_abs_diff"] <= SAME_KERNELS_ATOL, figures


def test_node_embeddings_match_python(node, tiny_model, tmp_path_factory):
    bundle = tiny_run("embedder", tiny_model, tmp_path_factory)["bundle"]
    figures = agreement(node, bundle, TEXTS)
    assert figures["embedding_max_abs_diff"] <= SAME_KERNELS_ATOL and figures["embedding_min_cosine"] > 0.99999, figures


def test_node_greedy_tokens_match_python(node, tiny_model, tmp_path_factory):
    bundle = tiny_run("generator", tiny_model, tmp_path_factory)["bundle"]
    figures = agreement(node, bundle, PROMPTS, max_new=8)
    # tokens_per_prompt > 1: the KV-cache decode steps ran, not only the prefill
    assert figures == {"greedy_identical": 1.0, "completion_identical": 1.0, "tokens_per_prompt": figures["tokens_per_prompt"]}
    assert figures["tokens_per_prompt"] > 1


@pytest.mark.parametrize("kind", ["classifier", "embedder", "generator"])
def test_self_test_passes_under_node_and_python(kind, node, tiny_model, tmp_path_factory, capsys):
    bundle = tiny_run(kind, tiny_model, tmp_path_factory)["bundle"]
    proc = node.run(bundle, "--self-test")
    assert proc.returncode == 0 and proc.stdout.startswith("self-test passed: 3/3"), proc.stderr
    assert main([bundle, "--self-test"]) == 0
    assert capsys.readouterr().out.strip() == proc.stdout.strip()  # the same one-line summary


@pytest.mark.parametrize("victim", ["tokenizer.json", "model.onnx", "selftest.json"])
def test_a_tampered_file_makes_both_refuse(victim, node, tiny_model, tmp_path_factory, tmp_path, capsys):
    copy = tmp_path / "bundle"
    shutil.copytree(tiny_run("generator", tiny_model, tmp_path_factory)["bundle"], copy)
    with open(copy / victim, "ab") as fh:
        fh.write(b" ")
    for args in ([str(copy), "--self-test"], [str(copy), "hello"]):
        proc = node.run(*args)
        assert proc.returncode == 2 and "sha256 mismatch" in proc.stderr and victim in proc.stderr, proc.stderr
        assert main(args) == 2 and "sha256 mismatch" in capsys.readouterr().err


def test_a_golden_mismatch_is_named_by_both(node, tiny_model, tmp_path_factory, tmp_path, capsys):
    copy = tmp_path / "bundle"
    shutil.copytree(tiny_run("generator", tiny_model, tmp_path_factory)["bundle"], copy)
    spec = json.loads((copy / "selftest.json").read_text())
    spec["cases"][1]["greedy_tokens"][2] += 1
    (copy / "selftest.json").write_text(json.dumps(spec))
    rehash(copy, "selftest.json")
    proc = node.run(copy, "--self-test")
    assert main([str(copy), "--self-test"]) == 3
    python_err = capsys.readouterr().err
    assert proc.returncode == 3 and "self-test FAILED: 2/3" in proc.stdout
    for err in (proc.stderr, python_err):
        assert "input 2" in err and "greedy tokens differ at position 2" in err, err


def test_a_consumer_from_another_bundle_is_refused(node, tiny_model, tmp_path_factory, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(tiny_run("classifier", tiny_model, tmp_path_factory)["bundle"], copy)
    other = tiny_run("generator", tiny_model, tmp_path_factory)["bundle"]
    shutil.copyfile(f"{other}/edgelmConsumer.mjs", copy / "edgelmConsumer.mjs")
    rehash(copy, "edgelmConsumer.mjs")
    proc = node.run(copy, "hello")
    assert proc.returncode == 2 and "generated for causal-lm" in proc.stderr, proc.stderr
