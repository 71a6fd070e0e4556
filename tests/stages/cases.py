"""The stage test-case table: every registered stage kind runs through the shared tester (test_all_stages.py)
on tiny models. One entry per case: (kind, tiny arch, task, config dict, data kind or None).

data kinds: "labelled" (a small labelled TSV), "text" (a small text file) — built by the tester.
Each issue's work owns its own rows; add cases for every task the stage supports.
"""

CASES: list[tuple[str, str, str, dict, str | None]] = [
    # (kind, arch, task, config, data)
    ("export", "bert", "sequence-classification", {"formats": ["onnx"], "optimize": False}, None),
    ("export", "distilbert", "feature-extraction", {"formats": ["onnx"]}, None),
    ("export", "llama", "causal-lm", {"formats": ["onnx"], "optimize": False, "greedy_steps": 4}, None),
    # eval (issue 8): torch runtime, reference = the run's input model
    ("eval", "bert", "sequence-classification", {"metrics": ["accuracy"], "runtime": ["torch"]}, "labelled"),
    ("eval", "bert", "feature-extraction", {"runtime": ["torch"], "fidelity_texts": 8}, None),
    ("eval", "llama", "causal-lm", {"runtime": ["torch"], "ppl_max_tokens": 64, "icl_samples": 8, "gen_tokens": 4}, None),
    # bench (issue 4): torch-cpu in a worker process, tiny budgets (timings are never asserted)
    ("bench", "bert", "sequence-classification", {"runtimes": ["torch-cpu"], "shapes": ["1x8"], "seconds": 0.2}, "labelled"),
    ("bench", "llama", "causal-lm", {"runtimes": ["torch-cpu"], "prompt_len": 4, "new_tokens": 4, "seconds": 0.2}, None),
    # finetune (issue 6): each method, encoders become classifiers, decoders learn text / label words
    ("finetune", "bert", "feature-extraction", {"method": "lora", "batch_size": 16}, "labelled"),
    ("finetune", "distilbert", "sequence-classification", {"method": "ia3", "batch_size": 16}, "labelled"),
    ("finetune", "roberta", "feature-extraction", {"method": "prompt", "num_virtual_tokens": 4, "batch_size": 16}, "labelled"),
    ("finetune", "llama", "causal-lm", {"method": "lora", "batch_size": 16}, "text"),
    ("finetune", "gpt2", "causal-lm", {"method": "full", "batch_size": 16, "label_words": ["bad", "good"]}, "labelled"),
    # lowrank / prune (issue 7): plain and activation-aware SVD; heads+FFN, layer drop, sparsity; GQA decoders
    ("lowrank", "bert", "sequence-classification", {"ratio": 0.3, "method": "svd"}, None),
    ("lowrank", "llama", "causal-lm", {"ratio": 0.3, "calib_samples": 8, "calib_seq_len": 32}, None),
    ("lowrank", "gpt2", "causal-lm", {"energy": 0.9, "calib_samples": 8, "calib_seq_len": 32}, "text"),
    ("prune", "bert", "feature-extraction", {"heads": 0.5, "ffn": 0.5, "round_to": 1, "calib_samples": 8}, None),
    ("prune", "distilbert", "sequence-classification", {"heads": 0.5, "importance": "taylor", "calib_samples": 8}, "labelled"),
    ("prune", "qwen2", "causal-lm", {"heads": 0.5, "ffn": 0.25, "round_to": 8, "calib_samples": 4, "calib_seq_len": 32}, None),
    ("prune", "gpt2", "causal-lm", {"drop_layers": 1, "ffn": 0.5, "scope": "global", "calib_samples": 4, "calib_seq_len": 32}, "text"),
    ("prune", "llama", "causal-lm", {"pattern": "2:4", "calib_samples": 4, "calib_seq_len": 32}, None),
    ("distill", "bert", "sequence-classification", {"batch_size": 16, "epochs": 1, "attention_weight": 0.1}, "labelled"),
    ("distill", "llama", "causal-lm", {"max_steps": 2, "batch_size": 8, "max_length": 32}, "text"),
    # quantize (issue 5): exports on the fly (no ONNX in the input), quantizes, checks parity
    ("quantize", "bert", "feature-extraction", {"method": "int8-dynamic", "parity_samples": 8}, None),
    ("quantize", "llama", "causal-lm", {"method": "int4", "parity_samples": 8}, None),
    # issue 18: int8 layers with a 4-bit token table; vocabulary pruning to the data's pieces
    ("quantize", "bert", "sequence-classification", {"method": "int8-dynamic", "table_bits": 4, "block_size": 16, "parity_samples": 8}, "labelled"),
    ("vocab-prune", "bert", "sequence-classification", {"reserve": 2}, "labelled"),
    ("vocab-prune", "distilbert", "feature-extraction", {"reserve": 0}, "labelled"),
]
