from edgelm.measure.recommend import perplexity_by_engine, recommend

ROWS = [{"artifact": "candidate", "runtime": "ort-cpu", "threads": 2, "decode_tok_s": 150.0},
        {"artifact": "candidate", "runtime": "ort-mobile", "threads": 2, "decode_tok_s": 140.0},
        {"artifact": "candidate", "runtime": "llama-cpp", "threads": 2, "decode_tok_s": 180.0},
        {"artifact": "baseline:01-export", "runtime": "llama-cpp", "threads": 2, "decode_tok_s": 400.0}]


def test_fastest_candidate_row_at_equal_quality_wins_and_says_why():
    evals = [{"by_runtime": {"ort-mobile": {"perplexity": 10.0}, "llama-cpp": {"perplexity": 10.1}}}]
    pick = recommend(ROWS, perplexity_by_engine(evals))
    assert pick["runtime"] == "llama-cpp" and "180.0 tok/s" in pick["why"] and "ort-cpu@2t 150.0" in pick["why"]


def test_a_faster_artifact_of_worse_quality_is_passed_over_and_named():
    evals = [{"by_runtime": {"ort-cpu": {"perplexity": 10.0}, "llama-cpp": {"perplexity": 11.0}}}]
    pick = recommend(ROWS, perplexity_by_engine(evals))
    assert pick["runtime"] == "ort-cpu" and "llama-cpp (180.0 tok/s, perplexity 11.000)" in pick["why"]


def test_only_the_plain_decode_rows_compete_when_the_lookup_set_was_benched_too():
    lookup = [{"artifact": "candidate", "runtime": "ort-mobile", "threads": 2, "decode_tok_s": 500.0, "decoding": d}
              for d in ("greedy", "lookup")]
    pick = recommend(ROWS + lookup, {})
    assert pick["runtime"] == "llama-cpp" and "500.0" not in pick["why"] and pick["why"].count("ort-mobile") == 1


def test_no_decode_rows_no_recommendation():
    assert recommend([{"artifact": "candidate", "runtime": "ort-cpu", "p50_ms": 3.0}], {}) is None
