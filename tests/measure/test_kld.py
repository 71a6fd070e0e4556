"""KL divergence of a candidate's next-token distributions from a reference's, and top-1 agreement: by hand on
small logit streams, on the perplexity windows of a tiny decoder, and through `edgelm eval --metric kld`."""

import json
import math

import numpy as np
import pytest
import torch

from edgelm.core.errors import EdgelmError
from edgelm.measure import quality
from edgelm.measure.quality import (kl_divergence, next_token_divergence, perplexity, perplexity_and_divergence,
                                    torch_model)
from edgelm.models.loading import load_model

TEXT = " ".join(["the movie was good and the acting was great . i love this film ."] * 12)


def test_divergence_by_hand():
    ref = [np.log(np.array([[0.5, 0.5], [0.9, 0.1]]))]
    cand = [np.log(np.array([[0.25, 0.75], [0.9, 0.1]]))]
    out = next_token_divergence(cand, ref)
    first = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert out["kld_mean"] == pytest.approx(first / 2, abs=1e-6) and out["kld_tokens"] == 2
    assert out["kld_p99"] == pytest.approx(first * 0.99, abs=1e-5)  # numpy's linear interpolation between 0 and first
    assert out["top1_agreement"] == 0.5  # [0.5, 0.5] ties to index 0 in the reference, 1 in the candidate
    same = next_token_divergence(ref, ref)
    assert same["kld_mean"] == 0 and same["top1_agreement"] == 1
    with pytest.raises(ValueError):  # streams of different lengths are not aligned
        next_token_divergence(ref * 2, ref)
    with pytest.raises(EdgelmError, match="no tokens"):
        next_token_divergence([], [])


def test_kld_reads_the_perplexity_windows(tiny_model):
    bundle = load_model(str(tiny_model("llama")))
    other = load_model(str(tiny_model("llama")))
    with torch.no_grad():
        for p in other.model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    windows = dict(window=16, stride=5, max_tokens=60)
    same = kl_divergence(torch_model(bundle), torch_model(bundle), TEXT, **windows)
    assert same["kld_mean"] == pytest.approx(0, abs=1e-9) and same["top1_agreement"] == 1
    assert same["kld_tokens"] == perplexity(torch_model(bundle), TEXT, **windows)["tokens"]
    apart = kl_divergence(torch_model(other), torch_model(bundle), TEXT, **windows)
    assert 0 < apart["kld_mean"] <= apart["kld_p99"]


def test_one_pass_gives_both_perplexities_and_the_divergence(tiny_model, monkeypatch):
    """The eval stage's joint pass (perplexity + kld against a reference) equals the three separate calls, also
    when the log-softmax runs in chunks of rows smaller than a window."""
    bundle = load_model(str(tiny_model("llama")))
    other = load_model(str(tiny_model("llama")))
    with torch.no_grad():
        for p in other.model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    monkeypatch.setattr(quality, "ROWS_PER_CHUNK", 3)
    windows = dict(window=16, stride=5, max_tokens=60)
    cand, ref = torch_model(other), torch_model(bundle)
    cand_ppl, ref_ppl, kld = perplexity_and_divergence(cand, ref, TEXT, **windows)
    assert cand_ppl == pytest.approx(perplexity(cand, TEXT, **windows), rel=1e-6)
    assert ref_ppl == pytest.approx(perplexity(ref, TEXT, **windows), rel=1e-6)
    assert kld == pytest.approx(kl_divergence(cand, ref, TEXT, **windows), rel=1e-6)
    assert cand_ppl["perplexity"] != ref_ppl["perplexity"] and kld["kld_mean"] > 0


def test_eval_cli_kld_against_a_reference(tiny_model, tmp_path):
    from click.testing import CliRunner

    from edgelm.cli import main

    model = str(tiny_model("llama"))
    result = CliRunner().invoke(main, ["eval", model, "--metric", "kld", "--reference", model, "--json"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output[result.output.index("{"):])
    assert metrics["kld_mean"] == pytest.approx(0, abs=1e-9) and metrics["top1_agreement"] == 1.0
    lone = CliRunner().invoke(main, ["eval", model, "--metric", "kld"])
    assert lone.exit_code == 2 and "reference" in lone.output
