"""The eval stage's text metrics against a reference: perplexity and kld together take one pass of each model over
the text's windows and give the same figures as each metric on its own."""

from edgelm.measure import quality
from edgelm.stages.eval import EvalConfig, evaluate_standalone
from tests.tiny import build_tiny

WINDOWS = dict(ppl_window=16, ppl_stride=8, ppl_max_tokens=64)


def test_perplexity_and_kld_share_one_pass_per_model(tmp_path, monkeypatch):
    candidate = str(build_tiny(tmp_path / "candidate", "llama", seed=0))
    reference = str(build_tiny(tmp_path / "reference", "llama", seed=1))
    passes = []
    windows = quality.scored_windows
    monkeypatch.setattr(quality, "scored_windows", lambda model, *a, **k: passes.append(model.name) or windows(model, *a, **k))

    def run(*metrics):
        passes.clear()
        return evaluate_standalone(candidate, EvalConfig(metrics=list(metrics), **WINDOWS), reference=reference)

    joint = run("perplexity", "kld")
    assert sorted(passes) == ["reference:input", "torch"]
    ppl, kld = run("perplexity"), run("kld")
    assert joint["perplexity"] == ppl["perplexity"] and joint["reference_perplexity"] == ppl["reference_perplexity"]
    assert joint["perplexity_ratio"] == ppl["perplexity_ratio"] != 1
    assert {k: joint[k] for k in ("kld_mean", "kld_p99", "top1_agreement", "kld_tokens")} == \
        {k: kld[k] for k in ("kld_mean", "kld_p99", "top1_agreement", "kld_tokens")}
    assert joint["kld_mean"] > 0


def test_kld_without_a_reference_is_refused_in_one_line_before_any_scoring(tmp_path, monkeypatch):
    import pytest

    from edgelm.core.errors import EdgelmError

    candidate = str(build_tiny(tmp_path / "candidate", "llama", seed=0))
    scored = []
    monkeypatch.setattr(quality, "scored_windows", lambda *a, **k: scored.append(1))
    with pytest.raises(EdgelmError, match=r"'kld' compares with a reference model.*--reference MODEL") as err:
        evaluate_standalone(candidate, EvalConfig(metrics=["perplexity", "kld"], **WINDOWS))
    assert not scored and "\n" not in str(err.value)
