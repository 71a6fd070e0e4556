"""Tiny random-init models and a word-level tokenizer, built in seconds, for unit tests.

`build_tiny(folder, arch, task)` writes an HF folder (config.json, model.safetensors, tokenizer.json). Add an
architecture by adding one line to TINY_CONFIGS — test matrices read that table.
"""

from __future__ import annotations

from pathlib import Path

WORDS = ("the a an is was good bad great terrible movie film plot acting fun boring love hate it this that "
         "and or not very really quite story actor scene music ending , . ! ? i you we they he she positive "
         "negative review great awful nice best worst one two three of to in on for with as at by from").split()
ENCODER_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
DECODER_SPECIALS = ["<pad>", "<unk>", "<s>", "</s>"]

_ENC = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, max_position_embeddings=128)
_DEC = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, intermediate_size=64,
            max_position_embeddings=128)
TINY_CONFIGS: dict[str, dict] = {
    "bert": dict(_ENC, type_vocab_size=2),
    "roberta": dict(_ENC, type_vocab_size=1, pad_token_id=0),
    "distilbert": dict(dim=32, n_layers=2, n_heads=4, hidden_dim=64, max_position_embeddings=128),
    "electra": dict(_ENC, embedding_size=32),
    "gpt2": dict(n_embd=32, n_layer=2, n_head=4, n_positions=128),
    "gpt_neox": dict(_ENC, rotary_pct=0.5),
    "llama": dict(_DEC),
    "mistral": dict(_DEC, sliding_window=None),
    "qwen2": dict(_DEC),
    "qwen3": dict(_DEC, head_dim=8),
    "phi3": dict(_DEC, pad_token_id=0),
    "gemma2": dict(_DEC, head_dim=8, sliding_window=64),
}
ENCODERS = ("bert", "roberta", "distilbert", "electra")
DECODERS = ("gpt2", "gpt_neox", "llama", "mistral", "qwen2", "qwen3", "phi3", "gemma2")


def build_tokenizer(decoder: bool):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = DECODER_SPECIALS if decoder else ENCODER_SPECIALS
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(specials + WORDS))}  # WORDS repeats "great"
    tok = Tokenizer(models.WordLevel(vocab, unk_token=specials[1]))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    if decoder:
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    else:
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                       sep_token="[SEP]", mask_token="[MASK]")
    return fast


def build_tiny(folder: Path, arch: str, task: str | None = None, num_labels: int = 2, seed: int = 0,
               **overrides) -> Path:
    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification

    decoder = arch in DECODERS
    task = task or ("causal-lm" if decoder else "feature-extraction")
    tokenizer = build_tokenizer(decoder)
    kwargs = dict(TINY_CONFIGS[arch], vocab_size=len(tokenizer), **overrides)
    if decoder:
        kwargs.update(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                      pad_token_id=tokenizer.pad_token_id)
    config = AutoConfig.for_model(arch, **kwargs)
    cls = {"causal-lm": AutoModelForCausalLM, "sequence-classification": AutoModelForSequenceClassification,
           "feature-extraction": AutoModel}[task]
    if task == "sequence-classification":
        config.num_labels = num_labels
        config.id2label = {i: f"LABEL_{i}" for i in range(num_labels)}
        config.label2id = {v: k for k, v in config.id2label.items()}
    torch.manual_seed(seed)
    model = cls.from_config(config).eval()
    folder = Path(folder)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder
