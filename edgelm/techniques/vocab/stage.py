"""Vocabulary pruning stage: the token pieces the task's data uses, a reserve of the most frequent others, every
special and single-character piece; tokenizer and embedding table remapped together, checked on the data."""

from __future__ import annotations

import copy

from pydantic import Field

from edgelm.core.errors import EdgelmError
from edgelm.core.stage import Stage, StageConfig, StageResult, register_stage, require_model
from edgelm.core.ui import info

CHECK_TEXTS = 32
VOCAB_KEY = "vocab_kept"  # bundle.extra: the old ids kept, in order (a teacher's table is cut to match)


class VocabPruneConfig(StageConfig):
    reserve: int = Field(2000, ge=0, description="pieces kept beyond those the data uses: the lowest ids (BERT "
                                                 "vocabularies list words by frequency)")
    max_samples: int | None = Field(None, gt=0, description="texts of --data scanned for used pieces (default: all)")


@register_stage
class VocabPruneStage(Stage):
    kind = "vocab-prune"
    Config = VocabPruneConfig
    summary = "Prune the vocabulary to the pieces the task's data uses; tokenizer and embedding table remapped"

    def run(self, bundle, config: VocabPruneConfig, ctx) -> StageResult:
        require_model(bundle, self.kind)
        model, tokenizer, metrics, kept = prune_vocabulary(bundle, scanned_texts(ctx, config.max_samples), config.reserve)
        return StageResult(bundle.with_model(model, tokenizer=tokenizer, extra={**bundle.extra, VOCAB_KEY: kept}), metrics)


def prune_vocabulary(bundle, texts: list[str], reserve: int):
    """(pruned model copy, its tokenizer, metrics, kept old ids) for the bundle's encoder and the task's texts."""
    from edgelm.techniques.vocab.remap import kept_ids, prune_embeddings, pruned_tokenizer, used_ids

    if bundle.task == "causal-lm":
        raise EdgelmError("vocab-prune: decoders generate over the whole vocabulary; prune encoders only")
    tokenizer = bundle.tokenizer
    kept = kept_ids(tokenizer, used_ids(tokenizer, texts), reserve)
    new_tokenizer = pruned_tokenizer(tokenizer, kept)
    model = copy.deepcopy(bundle.model).eval()
    removed = prune_embeddings(model, kept, new_tokenizer.pad_token_id)
    check = check_unchanged(bundle.model, tokenizer, model, new_tokenizer, texts[:CHECK_TEXTS])
    info(f"vocab-prune: kept {len(kept)} of {len(kept) + removed} pieces ({len(texts)} texts scanned)")
    metrics = {"vocab_before": len(kept) + removed, "vocab_after": len(kept), "texts_scanned": len(texts),
               "params_removed": removed * model.get_input_embeddings().embedding_dim, "vocab_check": check}
    return model, new_tokenizer, metrics, kept


def scanned_texts(ctx, max_samples: int | None) -> list[str]:
    from edgelm.data.readers import load_examples

    # --data only: the eval set stays unseen, so its accuracy shows what words outside the kept pieces cost
    data = ctx.data if ctx.data is not None else ctx.eval_data
    if data is None:
        raise EdgelmError("vocab-prune: needs the task's texts; pass --data")
    return load_examples(data.model_copy(update={"max_samples": max_samples, "seed": ctx.seed})).texts


def check_unchanged(model, tokenizer, pruned, new_tokenizer, texts: list[str]) -> dict:
    """The data's texts tokenize to the same pieces and give the same outputs before and after."""
    import torch

    old = tokenizer(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
    new = new_tokenizer(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
    pieces_equal = all(tokenizer.convert_ids_to_tokens(a) == new_tokenizer.convert_ids_to_tokens(b)
                       for a, b in zip(old["input_ids"].tolist(), new["input_ids"].tolist()))
    with torch.no_grad():
        before, after = _output(model(**old)), _output(pruned(**new))
    diff = float((before - after).abs().max())
    if not pieces_equal or diff > 1e-4:
        raise EdgelmError(f"vocab-prune: the pruned model differs on the data's own texts (pieces equal: "
                          f"{pieces_equal}, max |diff| {diff:.2e}); this is a bug, please report it")
    return {"texts": len(texts), "pieces_equal": pieces_equal, "max_abs_diff": diff}


def _output(out):
    return out.logits if hasattr(out, "logits") and out.logits is not None else out.last_hidden_state


def teacher_for_student(teacher, student):
    """The distillation teacher reads the student's token ids: when the student's vocabulary was pruned
    (bundle.extra[VOCAB_KEY]) and the teacher's was not, a teacher copy with the same kept rows (exact on them)."""
    from edgelm.techniques.vocab.remap import prune_embeddings

    kept = student.extra.get(VOCAB_KEY)
    if not kept or teacher.model is None or teacher.model.get_input_embeddings().num_embeddings == len(kept):
        return teacher
    model = copy.deepcopy(teacher.model)
    prune_embeddings(model, kept, student.tokenizer.pad_token_id)
    return teacher.derive(model=model, tokenizer=student.tokenizer)
