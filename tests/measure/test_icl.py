import numpy as np
import pytest
import torch

from edgelm.core.errors import EdgelmError
from edgelm.data.readers import Examples
from edgelm.measure.quality import (EvalModel, check_template, continuation_logprobs, greedy_matches, icl_probe,
                                    icl_prompts, label_sequences, log_softmax, torch_model)
from edgelm.models.loading import load_model

SENTIMENT = Examples(
    texts=["a great fun movie", "a boring bad film", "really good acting", "terrible plot", "the best story",
           "the worst ending", "nice music", "awful scene"],
    labels=[1, 0, 1, 0, 1, 0, 1, 0], label_names=["0", "1"], source="inline")
POSITIVES = SENTIMENT.subset([0, 2, 4, 6])


def prefers_good_after_very(tok):
    """A fake LM: after 'very' the next token 'good' is likely; everything else is flat."""
    very, good = tok.convert_tokens_to_ids(["very", "good"])

    def forward(feeds):
        logits = np.zeros(feeds["input_ids"].shape + (len(tok),), np.float32)
        logits[..., very] = 2.0
        logits[feeds["input_ids"] == very, good] = 5.0
        return logits

    return EvalModel(forward, tok, ["input_ids", "attention_mask"], "causal-lm")


def test_two_label_words_with_the_same_first_token_are_told_apart(tiny_model):
    tok = load_model(str(tiny_model("llama"))).tokenizer
    words = ["very bad", "very good"]
    seqs = label_sequences(tok, words)
    assert seqs[0][0] == seqs[1][0] and seqs[0] != seqs[1]  # the same first token
    model = prefers_good_after_very(tok)
    scores = continuation_logprobs(model, ["Label:", "a b c"], seqs)
    assert (scores[:, 1] > scores[:, 0]).all()
    result = icl_probe(model, SENTIMENT, POSITIVES, k=2, label_words=words)
    assert result["icl_accuracy"] == 100.0  # a first-token scorer ties here and answers label 0: 0.0


def test_continuation_logprobs_equal_torch_log_probs_of_prompt_plus_label(tiny_model):
    bundle = load_model(str(tiny_model("llama")))
    tok, model = bundle.tokenizer, torch_model(bundle)
    prompts = ["the movie was", "a film that i love and the plot is"]
    seqs = label_sequences(tok, ["good", "very bad", "not very fun"])
    scores = continuation_logprobs(model, prompts, seqs, batch_size=2)
    for p, prompt in enumerate(prompts):
        for c, tokens in enumerate(seqs):
            ids = tok(prompt, add_special_tokens=False)["input_ids"] + tokens
            with torch.no_grad():
                logits = bundle.model(torch.tensor([ids])).logits[0].double().numpy()
            logp = log_softmax(logits)[np.arange(len(ids) - 1), ids[1:]]
            assert scores[p, c] == pytest.approx(logp[-len(tokens):].sum(), abs=1e-4)


def test_greedy_matches_agree_with_generate(tiny_model):
    bundle = load_model(str(tiny_model("llama")))
    model, tok = torch_model(bundle), bundle.tokenizer
    prompts = ["the movie was", "i love this", "a story of", "it is not", "the acting and"]
    words = []
    for prompt in prompts:
        new = model.generate(tok(prompt, add_special_tokens=False)["input_ids"], 1)
        words.append(tok.convert_ids_to_tokens(new)[0])
    usable = [(p, w) for p, w in zip(prompts, words) if w.isalpha()]
    assert usable, words
    assert greedy_matches(model, [p for p, _ in usable], [w for _, w in usable]) == [True] * len(usable)
    wrong = ["," if w != "," else "." for _, w in usable]
    assert greedy_matches(model, [p for p, _ in usable], wrong) == [False] * len(usable)


def test_template_and_label_words_reach_the_prompts():
    prompts = icl_prompts(SENTIMENT, SENTIMENT, k=2, label_words=["bad", "good"], leave_one_out=True,
                          template="Q: {text} => {label}")
    shots, query = prompts[0].split("\n\n")[:-1], prompts[0].split("\n\n")[-1]
    assert query == f"Q: {SENTIMENT.texts[0]} =>"
    assert sorted(s.rsplit(" ", 1)[-1] for s in shots) == ["bad", "good"]
    default = icl_prompts(SENTIMENT, SENTIMENT, k=2, label_words=["bad", "good"], leave_one_out=True)
    assert default[0].endswith(f"Input: {SENTIMENT.texts[0]}\nLabel:")


def test_a_template_without_text_or_a_final_label_is_refused():
    for bad in ("Review: {label}", "{text} -> {label} .", "{text}"):
        with pytest.raises(EdgelmError, match="must contain"):
            check_template(bad)
