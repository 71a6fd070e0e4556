"""Random-init models at real proportions, one or more per architecture family, for the architecture matrix
(tests/arch). Head size 64 (128 / 96 where the family uses it), the GQA ratios real checkpoints use (14/2 as
Qwen2.5-0.5B, 9/3 as SmolLM2-135M, 15/5 as SmolLM2-360M, 32/8 as Llama-3.2-1B scaled to 8/2), tied and untied
heads, biases, rope scaling types and sliding windows; hidden = heads x head size, two layers, a small MLP and
the word-level vocabulary of tests/tiny.py, so each builds in about a second.

`build_arch(folder, case)` writes an HF folder; FAST is the subset the default suite runs.
"""

from __future__ import annotations

from pathlib import Path

from tests.tiny import build_tokenizer

_L = dict(num_hidden_layers=2, intermediate_size=128, max_position_embeddings=512)
_ROPE_LLAMA3 = dict(rope_type="llama3", factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0,
                    original_max_position_embeddings=128)


def _longrope(head_dim: int) -> dict:
    half = head_dim // 2
    return dict(rope_type="longrope", short_factor=[1.0] * half, long_factor=[1.5] * half)


# case -> (model_type, config kwargs)
DECODER_CASES: dict[str, tuple[str, dict]] = {
    "llama-9x3-h64-tied": ("llama", dict(_L, hidden_size=576, num_attention_heads=9, num_key_value_heads=3,
                                         tie_word_embeddings=True)),
    "llama-8x2-h64-llama3rope": ("llama", dict(_L, hidden_size=512, num_attention_heads=8, num_key_value_heads=2,
                                               tie_word_embeddings=False, rope_scaling=_ROPE_LLAMA3)),
    "llama-4x2-h64-linear": ("llama", dict(_L, hidden_size=256, num_attention_heads=4, num_key_value_heads=2,
                                           rope_scaling=dict(rope_type="linear", factor=2.0))),
    "llama-4x2-h64-dynamic": ("llama", dict(_L, hidden_size=256, num_attention_heads=4, num_key_value_heads=2,
                                            rope_scaling=dict(rope_type="dynamic", factor=2.0))),
    "llama-4x2-h64-yarn": ("llama", dict(_L, hidden_size=256, num_attention_heads=4, num_key_value_heads=2,
                                         rope_scaling=dict(rope_type="yarn", factor=4.0,
                                                           original_max_position_embeddings=128))),
    "mistral-15x5-h64-window": ("mistral", dict(_L, hidden_size=960, num_attention_heads=15, num_key_value_heads=5,
                                                head_dim=64, sliding_window=64)),
    "mistral-8x2-h128": ("mistral", dict(_L, hidden_size=1024, num_attention_heads=8, num_key_value_heads=2,
                                         head_dim=128, sliding_window=None)),
    "qwen2-14x2-h64-bias-tied": ("qwen2", dict(_L, hidden_size=896, num_attention_heads=14, num_key_value_heads=2,
                                               tie_word_embeddings=True)),
    "qwen2-4x2-h64-window-untied": ("qwen2", dict(_L, hidden_size=256, num_attention_heads=4, num_key_value_heads=2,
                                                  tie_word_embeddings=False, use_sliding_window=True,
                                                  sliding_window=64, max_window_layers=0)),
    "qwen3-4x2-h128": ("qwen3", dict(_L, hidden_size=256, num_attention_heads=4, num_key_value_heads=2, head_dim=128,
                                     tie_word_embeddings=True)),
    "phi3-4x4-h96": ("phi3", dict(_L, hidden_size=384, num_attention_heads=4, num_key_value_heads=4)),
    "phi3-4x2-h64-longrope": ("phi3", dict(_L, hidden_size=256, num_attention_heads=4, num_key_value_heads=2,
                                           original_max_position_embeddings=128, rope_scaling=_longrope(64))),
    "gemma2-4x2-h128-window": ("gemma2", dict(_L, hidden_size=256, num_attention_heads=4, num_key_value_heads=2,
                                              head_dim=128, sliding_window=64)),
    "gemma3-4x1-h128-window": ("gemma3_text", dict(_L, hidden_size=256, num_attention_heads=4, num_key_value_heads=1,
                                                   head_dim=128, sliding_window=64)),
    "gpt2-2-h64": ("gpt2", dict(n_embd=128, n_head=2, n_layer=2, n_positions=512)),
    "gpt_neox-4-h64-rot25": ("gpt_neox", dict(_L, hidden_size=256, num_attention_heads=4, rotary_pct=0.25)),
    "olmo-4-h64": ("olmo", dict(_L, hidden_size=256, num_attention_heads=4)),
    "olmo2-4-h64": ("olmo2", dict(_L, hidden_size=256, num_attention_heads=4)),
    "granite-4x2-h64": ("granite", dict(_L, hidden_size=256, num_attention_heads=4, num_key_value_heads=2)),
    "stablelm-4-h64": ("stablelm", dict(_L, hidden_size=256, num_attention_heads=4, num_key_value_heads=4)),
    "starcoder2-4x2-h64": ("starcoder2", dict(_L, hidden_size=256, num_attention_heads=4, num_key_value_heads=2,
                                              sliding_window=None)),
    "phi-4-h64": ("phi", dict(_L, hidden_size=256, num_attention_heads=4)),
    "cohere-4x2-h64": ("cohere", dict(_L, hidden_size=256, num_attention_heads=4, num_key_value_heads=2)),
    "smollm3-4x2-h64": ("smollm3", dict(_L, hidden_size=256, num_attention_heads=4, num_key_value_heads=2)),
    "gpt_bigcode-2-h64-mqa": ("gpt_bigcode", dict(n_embd=128, n_head=2, n_layer=2, n_positions=512, multi_query=True)),
    "opt-2-h64": ("opt", dict(hidden_size=128, num_attention_heads=2, num_hidden_layers=2, ffn_dim=128,
                              word_embed_proj_dim=128, max_position_embeddings=512)),
}
_E = dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
          max_position_embeddings=512)
ENCODER_CASES: dict[str, tuple[str, dict]] = {
    "bert-2-h64": ("bert", dict(_E, type_vocab_size=2)),
    "roberta-2-h64": ("roberta", dict(_E, type_vocab_size=1)),
    "xlm-roberta-2-h64": ("xlm-roberta", dict(_E, type_vocab_size=1)),
    "distilbert-2-h64": ("distilbert", dict(dim=128, n_layers=2, n_heads=2, hidden_dim=128, max_position_embeddings=512)),
    "electra-2-h64": ("electra", dict(_E, embedding_size=128)),
    "deberta-v2-2-h64": ("deberta-v2", dict(_E, type_vocab_size=0, relative_attention=True, position_buckets=32,
                                            pos_att_type=["p2c", "c2p"])),
    "modernbert-2-h64": ("modernbert", dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                                            intermediate_size=128, max_position_embeddings=512)),
}
CASES = {**DECODER_CASES, **ENCODER_CASES}
# cases edgelm refuses in one line (exit 2), with the words the refusal must contain
REFUSED = {"llama-4x2-h64-dynamic": "torch.export cannot trace this model: GuardOnDataDependentSymNode in "
                                    "dynamic_frequency_update"}
FAST = ("llama-9x3-h64-tied", "gpt2-2-h64")


def is_decoder(case: str) -> bool:
    return case in DECODER_CASES


def build_arch(folder: Path, case: str, seed: int = 0) -> Path:
    """Write the random-init model of `case` (causal LM for decoders, bare encoder otherwise) and its tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    model_type, kwargs = CASES[case]
    decoder = is_decoder(case)
    tokenizer = build_tokenizer(decoder)
    ids = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id) if decoder else \
        dict(cls_token_id=tokenizer.cls_token_id, sep_token_id=tokenizer.sep_token_id)
    config = AutoConfig.for_model(model_type, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                                  **ids, **kwargs)
    torch.manual_seed(seed)
    model = (AutoModelForCausalLM if decoder else AutoModel).from_config(config).eval()
    folder = Path(folder)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder
