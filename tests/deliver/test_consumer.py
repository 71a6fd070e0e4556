import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from edgelm.deliver.consumer import BundleError, BundleModel, main, verify
from edgelm.models.loading import load_model
from tests.deliver.runs import tiny_run

TEXTS = ["a great fun movie", "the plot was boring and bad"]


@pytest.mark.parametrize("kind", ["classifier", "generator"])
def test_consumer_imports_no_torch_or_transformers(kind, tiny_model, tmp_path_factory):
    bundle = tiny_run(kind, tiny_model, tmp_path_factory)["bundle"]
    code = ("import sys, json\nfrom edgelm.deliver.consumer import main\nrc = main([sys.argv[1], 'a great movie'])\n"
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'edgelm.models.loading'))\n"
            "print(json.dumps({'rc': rc, 'heavy': heavy}))\n")
    proc = subprocess.run([sys.executable, "-c", code, bundle], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert json.loads(lines[-1]) == {"rc": 0, "heavy": []}
    first = json.loads(lines[0])
    assert first["label"] in ("LABEL_0", "LABEL_1") if kind == "classifier" else first["token_ids"]


def test_consumer_label_matches_the_torch_model(tiny_model, tmp_path_factory):
    run = tiny_run("classifier", tiny_model, tmp_path_factory)
    model = BundleModel(run["bundle"])
    torch_bundle = load_model(str(run["model_dir"]))
    for text in TEXTS:
        got = model(text)
        with torch.no_grad():
            want = torch_bundle.model(**torch_bundle.tokenizer(text, return_tensors="pt")).logits[0].numpy()
        np.testing.assert_allclose(got["logits"], want, atol=1e-4)
        assert got["label"] == torch_bundle.labels[int(want.argmax())]


def test_consumer_greedy_generation_matches_torch(tiny_model, tmp_path_factory):
    run = tiny_run("generator", tiny_model, tmp_path_factory)
    model = BundleModel(run["bundle"])
    torch_bundle = load_model(str(run["model_dir"]))
    prompt = "the movie was"
    got = model(prompt, max_new_tokens=6)
    ids = torch.tensor([torch_bundle.tokenizer(prompt)["input_ids"]])
    with torch.no_grad():
        want = torch_bundle.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=6, do_sample=False,
                                           pad_token_id=torch_bundle.tokenizer.pad_token_id)[0, ids.shape[1]:].tolist()
    eos = torch_bundle.tokenizer.eos_token_id
    assert got["token_ids"] == want[: len(got["token_ids"])] and (len(got["token_ids"]) == 6 or got["token_ids"][-1] == eos)


def test_a_modified_file_is_refused(tiny_model, tmp_path_factory, tmp_path, capsys):
    copy = tmp_path / "bundle"
    shutil.copytree(tiny_run("classifier", tiny_model, tmp_path_factory)["bundle"], copy)
    tok = copy / "tokenizer.json"
    tok.write_text(tok.read_text().replace("great", "grate", 1))
    with pytest.raises(BundleError, match="sha256 mismatch"):
        verify(copy)
    assert main([str(copy), "hello"]) == 2
    assert "sha256 mismatch" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["../outside.json", "sub/model.onnx", ".hidden"])
def test_manifest_names_outside_the_bundle_are_refused(tiny_model, tmp_path_factory, tmp_path, name):
    copy = tmp_path / "bundle"
    shutil.copytree(tiny_run("classifier", tiny_model, tmp_path_factory)["bundle"], copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["files"][name] = {"sha256": "0" * 64, "bytes": 1}
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="not a plain file name"):
        verify(copy)


def test_unlisted_model_is_refused(tiny_model, tmp_path_factory, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(tiny_run("classifier", tiny_model, tmp_path_factory)["bundle"], copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    del manifest["files"]["model.ort"]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="not listed with a hash"):
        verify(copy)
    assert main([]) == 2 and main([str(Path(copy).parent / "nope"), "x"]) == 2


def test_consumer_uses_the_manifests_lookup_decoding_with_the_same_tokens(tiny_model, tmp_path_factory, tmp_path):
    from edgelm.models.speculative import LookupDecoder

    copy = tmp_path / "bundle"
    shutil.copytree(tiny_run("generator", tiny_model, tmp_path_factory)["bundle"], copy)
    prompt = "the movie was good and the movie was good and the movie"
    plain = BundleModel(copy)(prompt, max_new_tokens=12)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["postprocessing"]["speculative"] = {"method": "lookup", "draft_tokens": 4, "ngram_max": 2, "ngram_min": 1}
    (copy / "manifest.json").write_text(json.dumps(manifest))
    model = BundleModel(copy)
    got = model(prompt, max_new_tokens=12)
    assert got["token_ids"] == plain["token_ids"]
    assert isinstance(model.decoder, LookupDecoder) and model.decoder.settings.draft_tokens == 4
    assert model.decoder.history[-1].emitted == len(got["token_ids"])
    manifest["postprocessing"]["speculative"] = {"method": "medusa"}
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert main([str(copy), prompt]) == 2
