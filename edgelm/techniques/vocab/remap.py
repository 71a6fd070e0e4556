"""The kept-token plan, and the tokenizer and embedding table rewritten to it.

Kept: every special / added token, every single-character piece ("a", "##a": any word still splits into pieces
rather than becoming [UNK]), every piece the task's texts tokenize to, and a reserve of the lowest-id others
(BERT-style WordPiece vocabularies list words by frequency). Kept pieces keep their order, so ids only shift down.
Texts made of kept pieces tokenize exactly as before: WordPiece matches longest-first, and every piece it chose
is still there while nothing longer was added."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from edgelm.core.errors import EdgelmError

TOKENIZER_FILE = "tokenizer.json"
SUPPORTED_MODELS = ("WordPiece", "WordLevel")


def used_ids(tokenizer, texts: list[str], batch: int = 1024) -> set[int]:
    """Every token id the texts tokenize to (untruncated, specials included)."""
    seen: set[int] = set()
    for start in range(0, len(texts), batch):
        for ids in tokenizer(texts[start:start + batch], truncation=False)["input_ids"]:
            seen.update(ids)
    return seen


def kept_ids(tokenizer, used: set[int], reserve: int) -> list[int]:
    """Sorted old ids to keep: specials, single characters, `used`, then `reserve` more of the lowest ids."""
    vocab = tokenizer.get_vocab()
    keep = set(used) | set(tokenizer.all_special_ids) | set(tokenizer.added_tokens_decoder)
    keep |= {i for piece, i in vocab.items() if len(piece.removeprefix("##")) == 1}
    others = (i for i in sorted(vocab.values()) if i not in keep)
    keep |= {i for _, i in zip(range(reserve), others)}
    return sorted(keep)


def pruned_tokenizer(tokenizer, kept: list[int]):
    """A tokenizer over the kept pieces only (new id = position in `kept`), written and re-read through its own
    files so tokenizer.json, tokenizer_config.json and vocab.txt agree."""
    from edgelm.models.loading import load_tokenizer

    new_id = {old: new for new, old in enumerate(kept)}
    with tempfile.TemporaryDirectory(prefix="edgelm-vocab-") as tmp:
        tokenizer.save_pretrained(tmp)
        folder = Path(tmp)
        _rewrite_tokenizer_json(folder / TOKENIZER_FILE, new_id)
        _rewrite_config(folder / "tokenizer_config.json", new_id)
        _rewrite_vocab_txt(folder / "vocab.txt", tokenizer, kept)
        return load_tokenizer(folder)


def _rewrite_tokenizer_json(path: Path, new_id: dict[int, int]) -> None:
    if not path.is_file():
        raise EdgelmError("vocab-prune: needs a fast tokenizer (tokenizer.json)")
    data = json.loads(path.read_text())
    if data["model"].get("type") not in SUPPORTED_MODELS:
        raise EdgelmError(f"vocab-prune: {data['model'].get('type')} tokenizers are not supported; "
                          f"use one of {', '.join(SUPPORTED_MODELS)}")
    data["model"]["vocab"] = {piece: new_id[i] for piece, i in data["model"]["vocab"].items() if i in new_id}
    for token in data.get("added_tokens") or []:
        token["id"] = new_id[token["id"]]
    _remap_post_processor(data.get("post_processor"), new_id)
    path.write_text(json.dumps(data, ensure_ascii=False))


def _remap_post_processor(processor: dict | None, new_id: dict[int, int]) -> None:
    """TemplateProcessing lists special ids; BertProcessing / RobertaProcessing hold [token, id] pairs."""
    if not processor:
        return
    for special in (processor.get("special_tokens") or {}).values():
        special["ids"] = [new_id[i] for i in special["ids"]]
    for key in ("cls", "sep"):
        if isinstance(processor.get(key), list):
            processor[key][1] = new_id[processor[key][1]]
    for inner in processor.get("processors") or []:
        _remap_post_processor(inner, new_id)


def _rewrite_config(path: Path, new_id: dict[int, int]) -> None:
    if not path.is_file():
        return
    config = json.loads(path.read_text())
    if "added_tokens_decoder" in config:
        config["added_tokens_decoder"] = {str(new_id[int(i)]): v for i, v in config["added_tokens_decoder"].items()}
    path.write_text(json.dumps(config, indent=2, ensure_ascii=False))


def _rewrite_vocab_txt(path: Path, tokenizer, kept: list[int]) -> None:
    if path.is_file():
        pieces = tokenizer.convert_ids_to_tokens(kept)
        path.write_text("".join(f"{p}\n" for p in pieces))


def prune_embeddings(model, kept: list[int], pad_id: int | None) -> int:
    """Keep only the `kept` rows of the input embedding table (in place); returns the rows removed."""
    import torch

    if model.get_output_embeddings() is not None:
        raise EdgelmError("vocab-prune: the model has an LM head over the vocabulary; prune encoders with a task head")
    old = model.get_input_embeddings()
    rows = torch.tensor(kept, dtype=torch.long)
    table = torch.nn.Embedding(len(kept), old.embedding_dim, padding_idx=pad_id)
    with torch.no_grad():
        table.weight.copy_(old.weight[rows])
    model.set_input_embeddings(table)
    model.config.vocab_size = len(kept)
    if pad_id is not None:
        model.config.pad_token_id = pad_id
    return old.num_embeddings - len(kept)
