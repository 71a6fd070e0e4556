"""The `bilstm` student (Tang et al. 2019): a new embedding + BiLSTM + max/mean pooling + MLP classifier
(edgelm.models.bilstm) trained on the teacher's soft targets (T²·KL at the temperature) and the hard labels, over the
user's labelled texts plus augmented copies of them (augment.py) that only the teacher labels.

It reads the teacher tokenizer's ids (the bundle, manifest and app snippets stay the same); with prune_vocab only the
tokens of the training texts (+ specials) keep an embedding row. Embeddings start from the teacher's own, projected
onto their principal components.
"""

from __future__ import annotations

from edgelm.core.errors import EdgelmError
from edgelm.core.stage import StageResult
from edgelm.core.ui import info
from edgelm.techniques.distill.students import register_student

DEFAULT_LR = 2e-3


@register_student("bilstm")
def distill_bilstm(bundle, teacher, teacher_name: str, config, ctx) -> StageResult:
    from edgelm.techniques.distill.stage import checkpoint_dir
    from edgelm.techniques.distill.students.input import accuracy_against, run_metrics
    from edgelm.train.trainer import PadCollator, accuracy_metric, train

    check_teacher(teacher, bundle)
    train_ds, eval_ds, n_augmented = student_features(bundle.tokenizer, teacher, config, ctx)
    student = build_student(bundle.tokenizer, teacher.model, token_ids(bundle.tokenizer, train_ds, config.prune_vocab),
                            config)
    pad = pad_id(bundle.tokenizer)
    cfg = config.train_config(metric="accuracy" if eval_ds else "loss", seed=ctx.seed, description="distill (bilstm)",
                              learning_rate=config.learning_rate or DEFAULT_LR)
    result = train(student, train_ds, eval_ds, cfg, workdir=checkpoint_dir(bundle, config, ctx),
                   collate_fn=PadCollator(pad), compute_loss=SoftTargetLoss(config),
                   metric_fn=accuracy_metric if eval_ds else None)
    student.eval()
    metrics = {"teacher": teacher_name, "student": "bilstm", **run_metrics(result, train_ds, eval_ds),
               "augmented_samples": n_augmented, "vocab_kept": student.config.table_size,
               "params": sum(p.numel() for p in student.parameters()),
               "teacher_params": sum(p.numel() for p in teacher.model.parameters())}
    if eval_ds:
        metrics.update(accuracy_against(soft_target_accuracy(eval_ds), metrics))
    return StageResult(bundle.with_model(student, extra={"student": {"kind": "bilstm", "teacher": teacher_name}}),
                       metrics)


def check_teacher(teacher, bundle) -> None:
    if teacher.model is None or teacher.task != "sequence-classification":
        raise EdgelmError(f"distill --student bilstm: the teacher must be a sequence classifier (got {teacher.task!r}); "
                          "fine-tune one first (finetune --data LABELLED)")
    if bundle.tokenizer is None:
        raise EdgelmError(f"{bundle.source}: no tokenizer in the input; the BiLSTM student reads its token ids")


def pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0


# --- data: labelled texts + augmented copies, each with the teacher's logits -----------------------------------
def student_features(tokenizer, teacher, config, ctx):
    """(train, eval, number of augmented texts): features with `teacher_logits`; augmented ones have labels -100."""
    from edgelm.models.text_tasks import aligned_labels, classification_features, load_splits
    from edgelm.techniques.distill.augment import augment

    if ctx.data is None:
        raise EdgelmError("distill --student bilstm: pass --data (labelled texts) to distill on")
    train_ex, eval_ex = load_splits(ctx.data, config.selection_data(ctx.eval_data), config.max_samples,
                                     config.eval_fraction, ctx.seed)
    train_ex.require_labels()
    order = teacher_order(teacher.labels or [], train_ex.label_names)
    mask = tokenizer.mask_token or tokenizer.unk_token or "_"
    extra = augment(train_ex.texts, config.augment_copies, mask, config.mask_prob, config.swap_prob,
                    config.ngram_prob, ctx.seed)
    make = lambda texts, labels: classification_features(tokenizer, texts, labels, config.max_length)  # noqa: E731
    train_ds = make(train_ex.texts, [order[y] for y in train_ex.labels]) + make(extra, [-100] * len(extra))
    eval_ds = make(eval_ex.texts, [order[y] for y in aligned_labels(train_ex, eval_ex)]) if eval_ex is not None else None
    for ds in (train_ds, eval_ds or []):
        add_teacher_logits(teacher.model, ds, pad_id(tokenizer))
    return train_ds, eval_ds, len(extra)


def teacher_order(teacher_labels: list[str], names: list[str]) -> list[int]:
    """The teacher's output index for each of the data's labels."""
    if set(names) <= set(teacher_labels):
        return [teacher_labels.index(n) for n in names]
    if len(names) == len(teacher_labels):
        info(f"distill: the teacher's labels ({', '.join(teacher_labels)}) are not named as the data's "
             f"({', '.join(names)}); taking them in the same order")
        return list(range(len(names)))
    raise EdgelmError(f"distill: the teacher has {len(teacher_labels)} labels, the data {len(names)} "
                      f"({', '.join(names)}); fine-tune the teacher on this data first")


def add_teacher_logits(teacher, features: list[dict], pad: int, batch_size: int = 64) -> None:
    """features[i]["teacher_logits"] = the teacher's logits; batches of similar length keep padding small."""
    import torch

    from edgelm.train.trainer import PadCollator

    collate, order = PadCollator(pad), sorted(range(len(features)), key=lambda i: len(features[i]["input_ids"]))
    teacher.eval()
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            batch = collate([{k: v for k, v in features[i].items() if k != "labels"} for i in chunk])
            for i, row in zip(chunk, teacher(**batch).logits.float().tolist()):
                features[i]["teacher_logits"] = row


def soft_target_accuracy(features: list[dict]) -> float:
    """The teacher's accuracy on labelled features, from the logits stored in them (percentage points)."""
    right = sum(max(range(len(f["teacher_logits"])), key=f["teacher_logits"].__getitem__) == f["labels"]
                for f in features)
    return round(100 * right / len(features), 4)


# --- the student ---------------------------------------------------------------------------------------------
def token_ids(tokenizer, features: list[dict], prune: bool) -> list[int]:
    """The tokenizer ids that keep an embedding row: all, or the specials plus those in the training features."""
    if not prune:
        return list(range(len(tokenizer)))
    seen = {t for f in features for t in f["input_ids"]}
    return sorted(seen | set(tokenizer.all_special_ids))


def build_student(tokenizer, teacher, kept: list[int], config):
    """A BiLSTM classifier with the teacher's labels whose id_map sends kept ids to their rows, others to UNK."""
    import torch

    from edgelm.models.bilstm import BiLSTMConfig, BiLSTMForSequenceClassification

    unk = tokenizer.unk_token_id
    rows = len(kept) + (unk is None or unk not in kept)  # no UNK token (byte-level BPE): one extra row for it
    vocab = max(len(tokenizer), teacher.config.vocab_size, max(kept) + 1)
    student_config = BiLSTMConfig(
        vocab_size=vocab, table_size=rows, embedding_size=config.embedding_size,
        hidden_size=config.lstm_hidden_size, classifier_size=config.lstm_hidden_size, pad_token_id=pad_id(tokenizer),
        num_labels=teacher.config.num_labels, id2label=dict(teacher.config.id2label),
        label2id=dict(teacher.config.label2id))
    student = BiLSTMForSequenceClassification(student_config)
    unk_row = kept.index(unk) if unk in kept else rows - 1
    id_map = torch.full((vocab,), unk_row, dtype=torch.long)
    id_map[torch.tensor(kept)] = torch.arange(len(kept))
    student.id_map.copy_(id_map)
    with torch.no_grad():
        student.embed.weight[:len(kept)] = teacher_embeddings(teacher, kept, config.embedding_size)
    return student.float().train()


def teacher_embeddings(teacher, kept: list[int], width: int):
    """The teacher's input embeddings of `kept`, projected onto their top `width` principal components (unit
    spread); extra columns (width beyond the teacher's) start small and random."""
    import torch

    table = teacher.get_input_embeddings().weight.detach().float()[torch.tensor(kept)]
    centred = table - table.mean(0)
    _, _, components = torch.linalg.svd(centred, full_matrices=False)
    k = min(width, components.shape[0])
    projected = centred @ components[:k].T
    generator = torch.Generator().manual_seed(0)
    out = torch.randn(len(kept), width, generator=generator) * 0.1
    out[:, :k] = projected / projected.std().clamp(min=1e-6)
    return out


class SoftTargetLoss:
    """compute_loss(model, inputs): kd · T²·KL(teacher ‖ student) + hard · cross-entropy on labelled rows."""

    def __init__(self, config):
        self.config = config

    def __call__(self, model, inputs):
        import torch
        import torch.nn.functional as F

        feed = {k: v for k, v in inputs.items() if k not in ("labels", "teacher_logits")}
        logits = model(**feed).logits.float()
        temp, labels = self.config.temperature, inputs["labels"]
        t_logp = F.log_softmax(inputs["teacher_logits"].float() / temp, dim=-1)
        kd = (t_logp.exp() * (t_logp - F.log_softmax(logits / temp, dim=-1))).sum(-1).mean() * temp ** 2
        labelled = labels != -100
        hard = F.cross_entropy(logits[labelled], labels[labelled]) if labelled.any() else torch.zeros(())
        loss = self.config.kd_weight * kd + self.config.hard_weight * hard
        return loss, {"loss": loss, "logits": logits}
