import math

import numpy as np
import pytest
import torch

from edgelm.data.readers import Examples
from edgelm.core.errors import EdgelmError
from edgelm.measure.quality import (EvalModel, classification_scores, embedding_fidelity, evaluate_classification,
                             generation_parity, icl_probe, icl_prompts, perplexity, torch_model,
                             SENTIMENT_TEMPLATE)
from edgelm.models.loading import load_model

TEXT = " ".join(["the movie was good and the acting was great . i love this film ."] * 12)
SENTIMENT = Examples(
    texts=["a great fun movie", "a boring bad film", "really good acting", "terrible plot", "the best story",
           "the worst ending", "nice music", "awful scene"],
    labels=[1, 0, 1, 0, 1, 0, 1, 0], label_names=["0", "1"], source="inline")


def test_classification_scores_by_hand():
    scores = classification_scores([1, 1, 0, 0], [1, 0, 0, 0])
    assert scores["accuracy"] == 75.0
    # class 0: tp 2, pred 2, gold 3 -> 0.8; class 1: tp 1, pred 2, gold 1 -> 2/3
    assert scores["f1"] == pytest.approx(100 * (0.8 + 2 / 3) / 2, abs=1e-3)
    with pytest.raises(EdgelmError):
        classification_scores([1], [1, 0])


def test_recall_confusion_matrix_and_kappa_by_hand():
    scores = classification_scores([0, 1, 2, 2, 1], [0, 1, 2, 1, 0], ["low", "mid", "high"], ordinal=True)
    assert scores["confusion_matrix"] == {"labels": ["low", "mid", "high"], "counts": [[1, 1, 0], [0, 1, 1], [0, 0, 1]]}
    assert scores["recall_by_label"] == {"low": 50.0, "mid": 50.0, "high": 100.0}
    # weights (i-j)^2; observed off-diagonal cost 1 + 1 = 2; expected: outer([2,2,1], [1,2,2]) / 5 weighted = 6.4
    assert scores["kappa"] == pytest.approx(1 - 2 / 6.4, abs=1e-4)
    assert "kappa" not in classification_scores([0, 1], [0, 1], ["neg", "pos"])  # names: no order, no kappa
    assert classification_scores([0, 0], [0, 0], ordinal=True).get("kappa") is None  # chance agreement is perfect


def test_classification_matches_direct_torch_argmax(tiny_model):
    bundle = load_model(str(tiny_model("bert", "sequence-classification")))
    result = evaluate_classification(torch_model(bundle), SENTIMENT, batch_size=3)
    enc = bundle.tokenizer(SENTIMENT.texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        direct = bundle.model(**enc).logits.argmax(-1).tolist()
    assert result["predictions"] == direct
    assert result["accuracy"] == classification_scores(direct, SENTIMENT.labels)["accuracy"]


def test_perplexity_matches_torch_loss_when_the_window_covers_the_text(tiny_model):
    bundle = load_model(str(tiny_model("llama")))
    ids = bundle.tokenizer(TEXT, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        loss = bundle.model(input_ids=ids, labels=ids).loss.item()
    result = perplexity(torch_model(bundle), TEXT, window=512, stride=512)
    assert result["tokens"] == ids.shape[1] - 1
    assert result["perplexity"] == pytest.approx(math.exp(loss), rel=1e-4)


def test_sliding_window_scores_every_token_once_and_uniform_logits_give_vocab_size(tiny_model):
    bundle = load_model(str(tiny_model("llama")))
    vocab = len(bundle.tokenizer)
    uniform = EvalModel(lambda feeds: np.zeros(feeds["input_ids"].shape + (vocab,), np.float32), bundle.tokenizer,
                        ["input_ids", "attention_mask"], "causal-lm")
    n = len(bundle.tokenizer(TEXT, add_special_tokens=False)["input_ids"])
    result = perplexity(uniform, TEXT, window=16, stride=5)
    assert result["tokens"] == n - 1
    assert result["perplexity"] == pytest.approx(vocab, rel=1e-6)
    shorter = perplexity(torch_model(bundle), TEXT, window=8, stride=4, max_tokens=40)
    assert shorter["tokens"] == 39
    with pytest.raises(EdgelmError, match="stride"):
        perplexity(uniform, TEXT, window=8, stride=9)


def test_embedding_fidelity_is_one_against_itself_and_lower_against_another_model(tiny_model):
    bundle = load_model(str(tiny_model("bert")))
    texts = SENTIMENT.texts
    same = embedding_fidelity(torch_model(bundle), torch_model(bundle), texts)
    assert same["fidelity_cosine_min"] == pytest.approx(1.0, abs=1e-6)
    other = load_model(str(tiny_model("bert")))
    with torch.no_grad():
        for p in other.model.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    worse = embedding_fidelity(torch_model(other), torch_model(bundle), texts)
    assert worse["fidelity_cosine_mean"] < 0.999


def test_icl_prompts_are_balanced_k_shot_and_never_show_the_query_itself():
    prompts = icl_prompts(SENTIMENT, SENTIMENT, k=4, label_words=["negative", "positive"], leave_one_out=True,
                          template=SENTIMENT_TEMPLATE)
    assert len(prompts) == len(SENTIMENT)
    for q, prompt in enumerate(prompts):
        shots, query = prompt.split("\n\n")[:-1], prompt.split("\n\n")[-1]
        assert len(shots) == 4 and query == f"Review: {SENTIMENT.texts[q]}\nSentiment:"
        assert sum(s.endswith("positive") for s in shots) == 2
        assert all(f"Review: {SENTIMENT.texts[q]}\n" not in s for s in shots)


def test_icl_probe_reads_the_label_word_logits(tiny_model):
    bundle = load_model(str(tiny_model("llama")))
    tok = bundle.tokenizer
    positive = tok(" positive", add_special_tokens=False)["input_ids"][0]

    def always_positive(feeds):
        logits = np.zeros(feeds["input_ids"].shape + (len(tok),), np.float32)
        logits[..., positive] = 1.0
        return logits

    fake = EvalModel(always_positive, tok, ["input_ids", "attention_mask"], "causal-lm")
    result = icl_probe(fake, SENTIMENT, SENTIMENT, k=2, leave_one_out=True)
    assert result["icl_accuracy"] == 50.0  # half the queries are positive
    real = icl_probe(torch_model(bundle), SENTIMENT, SENTIMENT, k=2, batch_size=3, leave_one_out=True)
    assert 0.0 <= real["icl_accuracy"] <= 100.0 and real["n"] == len(SENTIMENT)
    with pytest.raises(EdgelmError, match="label words"):
        icl_probe(fake, SENTIMENT, SENTIMENT, label_words=["positive"])


def test_icl_batched_right_padding_gives_the_same_answers_as_one_by_one(tiny_model):
    model = torch_model(load_model(str(tiny_model("llama"))))
    batched = icl_probe(model, SENTIMENT, SENTIMENT, k=2, batch_size=8, leave_one_out=True)
    single = icl_probe(model, SENTIMENT, SENTIMENT, k=2, batch_size=1, leave_one_out=True)
    assert batched["icl_accuracy"] == single["icl_accuracy"]


def test_generation_parity_against_itself_and_against_a_different_model(tiny_model):
    bundle = load_model(str(tiny_model("llama")))
    prompts = ["the movie was", "i love this"]
    same = generation_parity(torch_model(bundle), torch_model(bundle), prompts, max_new_tokens=6)
    assert same["greedy_token_match"] == 1.0 and same["greedy_exact"] == 1.0 and same["greedy_prefix_mean"] == 6
    shifted = torch_model(bundle)
    shifted.generate = lambda ids, n: [bundle.tokenizer.pad_token_id] * n
    diff = generation_parity(shifted, torch_model(bundle), prompts, max_new_tokens=6)
    assert diff["greedy_exact"] < 1.0


def test_eval_cli_reports_accuracy_drop_against_a_reference(tiny_model, tmp_path):
    import json

    from click.testing import CliRunner

    from edgelm.cli import main

    data = tmp_path / "dev.tsv"
    data.write_text("label\tsentence\n" + "\n".join(f"{y}\t{t}" for y, t in zip(SENTIMENT.labels, SENTIMENT.texts)) + "\n")
    model = str(tiny_model("bert", "sequence-classification"))
    result = CliRunner().invoke(main, ["eval", model, "--eval-data", str(data), "--reference", model, "--json"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output)
    assert metrics["accuracy_drop_pt"] == 0.0 and metrics["reference_accuracy"] == metrics["accuracy"]
    matrix = metrics["confusion_matrix"]
    assert matrix["labels"] == ["0", "1"] and sum(map(sum, matrix["counts"])) == len(SENTIMENT)
    assert set(metrics["recall_by_label"]) == {"0", "1"} and "kappa" in metrics  # integer labels are ordinal
    missing = CliRunner().invoke(main, ["eval", model, "--metric", "accuracy"])
    assert missing.exit_code == 2 and "labelled data" in missing.output


@pytest.mark.real
@pytest.mark.slow
def test_smollm2_reads_the_builtin_sentiment_probe_well_above_chance():
    from edgelm.data.readers import load_examples
    from edgelm.stages.eval import PROBE_DATA
    from tests.conftest import require_builtin

    require_builtin("smollm2-135m")
    probe = load_examples(str(PROBE_DATA))
    result = icl_probe(torch_model(load_model("smollm2-135m")), probe, probe, k=4, leave_one_out=True,
                       template=SENTIMENT_TEMPLATE)
    assert result["icl_accuracy"] >= 70.0  # 85.0 measured; chance is 50


def test_eval_labels_are_numbered_as_the_model_numbers_them(tmp_path):
    from edgelm.data.readers import load_examples
    from edgelm.stages.eval import numbered_as_model

    path = tmp_path / "dev.tsv"
    path.write_text("label\tquestion\nLOC\twhere?\nNUM\thow many?\n")  # no ABBR or DESC: LOC would be 0 here
    held = numbered_as_model(load_examples(str(path)), ["ABBR", "DESC", "LOC", "NUM"])
    assert held.labels == [2, 3] and held.label_names == ["ABBR", "DESC", "LOC", "NUM"]
    untrained = load_examples(str(path))
    assert numbered_as_model(untrained, ["LABEL_0", "LABEL_1"]).labels == [0, 1]  # names unknown to the model
