"""The pieces of knowledge distillation the `distill` stage trains with: features, layer map, loss."""

from __future__ import annotations

from edgelm.core.errors import EdgelmError


def features(bundle, config, ctx):
    """(train, eval) feature lists. Classifiers need labels; LMs take plain text (or, with no --data, the
    bundled calibration prose); sentence embedders take texts."""
    from edgelm.data.readers import calibration_texts
    from edgelm.models.text_tasks import aligned_labels, causal_lm_features, classification_features, lm_features, load_splits

    tok = bundle.tokenizer
    if tok is None:
        raise EdgelmError(f"{bundle.source}: distillation needs a tokenizer")
    if ctx.data is None:
        if bundle.task != "causal-lm":
            raise EdgelmError("distill: pass --data (texts, with labels for classifiers) to distill on")
        texts = calibration_texts(n=config.max_samples or 512, seed=ctx.seed)
        return lm_features(tok, texts, config.max_length), None
    train_ex, eval_ex = load_splits(ctx.data, config.selection_data(ctx.eval_data), config.max_samples,
                                     config.eval_fraction, ctx.seed)
    if bundle.task == "sequence-classification":
        train_ex.require_labels()
        train_ds = classification_features(tok, train_ex.texts, train_ex.labels, config.max_length)
        eval_ds = (classification_features(tok, eval_ex.texts, aligned_labels(train_ex, eval_ex), config.max_length)
                   if eval_ex is not None else None)
        return train_ds, eval_ds
    if bundle.task == "causal-lm":
        make = lambda ex: causal_lm_features(tok, ex, max_length=config.max_length)  # noqa: E731
    else:
        # a placeholder label makes the Trainer compute the (label-free) distillation loss in evaluation
        make = lambda ex: [{**{k: v for k, v in f.items() if k != "labels"}, "labels": 0}  # noqa: E731
                           for f in lm_features(tok, ex.texts, config.max_length)]
    return make(train_ex), (make(eval_ex) if eval_ex is not None else None)


def layer_map(student, teacher, explicit: list[int], kept: list[int] | None) -> list[int]:
    """Teacher layer index for each student layer."""
    from edgelm.models.anatomy import count_layers

    s, t = count_layers(student), count_layers(teacher)
    if explicit:
        if len(explicit) != s or not all(0 <= j < t for j in explicit):
            raise EdgelmError(f"distill layer_map {explicit}: need {s} teacher layer indices in 0..{t - 1}")
        return list(explicit)
    if kept and len(kept) == s and max(kept) < t:
        return list(kept)
    if s == t:
        return list(range(s))
    return [max(0, round((i + 1) * t / s) - 1) for i in range(s)]


class DistillLoss:
    """compute_loss(model, inputs) for edgelm.train.trainer.train."""

    def __init__(self, teacher, mapping: list[int], config, task: str):
        self.teacher, self.mapping, self.config, self.task = teacher.eval(), mapping, config, task
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.last_terms: dict[str, float] = {}
        self._eager = False

    def __call__(self, model, inputs):
        import torch

        cfg = self.config
        if cfg.attention_weight and not self._eager:
            for m in (model, self.teacher):
                m.set_attn_implementation("eager")
            self._eager = True
        labels = inputs.get("labels")
        feed = {k: v for k, v in inputs.items() if k != "labels"}
        flags = dict(output_hidden_states=bool(cfg.hidden_weight) or self.task == "feature-extraction",
                     output_attentions=bool(cfg.attention_weight))
        if self.task == "causal-lm":
            flags["use_cache"] = False
        self.teacher.to(next(model.parameters()).device)
        student_out = model(**feed, **flags)
        with torch.no_grad():
            teacher_out = self.teacher(**feed, **flags)
        mask = feed["attention_mask"].bool()
        terms = {"kd": self._kd(student_out, teacher_out, mask)}
        if cfg.hard_weight and labels is not None and self.task != "feature-extraction":
            terms["hard"] = hard_loss(student_out.logits, labels, self.task)
        if cfg.hidden_weight:
            terms["hidden"] = self._hidden(student_out.hidden_states, teacher_out.hidden_states, mask)
        if cfg.attention_weight:
            terms["attention"] = self._attention(student_out.attentions, teacher_out.attentions, mask)
        weights = {"kd": cfg.kd_weight, "hard": cfg.hard_weight, "hidden": cfg.hidden_weight,
                   "attention": cfg.attention_weight}
        loss = sum(weights[k] * v for k, v in terms.items())
        self.last_terms = {k: round(float(v.detach()), 6) for k, v in terms.items()}
        logits = student_out.last_hidden_state if self.task == "feature-extraction" else student_out.logits
        return loss, {"loss": loss, "logits": logits}

    def _kd(self, s_out, t_out, mask):
        import torch.nn.functional as F

        if self.task == "feature-extraction":
            return masked_mse(s_out.last_hidden_state, t_out.last_hidden_state, mask)
        temp = self.config.temperature
        s_logp = F.log_softmax(s_out.logits.float() / temp, dim=-1)
        t_logp = F.log_softmax(t_out.logits.float() / temp, dim=-1)
        kl = (t_logp.exp() * (t_logp - s_logp)).sum(-1)  # per example (classifier) or per position (LM)
        if self.task == "causal-lm":
            kl = kl[mask]
        return kl.mean() * temp ** 2

    def _hidden(self, s_hidden, t_hidden, mask):
        # hidden_states[0] is the embedding output; layer i's output is hidden_states[i + 1]
        pairs = [(s_hidden[i + 1], t_hidden[j + 1]) for i, j in enumerate(self.mapping)]
        if pairs and pairs[0][0].shape[-1] != pairs[0][1].shape[-1]:
            raise EdgelmError("distill: student and teacher hidden sizes differ; set hidden_weight 0")
        return sum(masked_mse(s, t, mask) for s, t in pairs) / max(len(pairs), 1)

    def _attention(self, s_att, t_att, mask):
        import torch

        pairs = [(s_att[i], t_att[j]) for i, j in enumerate(self.mapping) if s_att[i].shape == t_att[j].shape]
        if not pairs:
            return torch.zeros((), device=mask.device)
        return sum(((s - t) ** 2).mean() for s, t in pairs) / len(pairs)


def masked_mse(a, b, mask):
    diff = ((a.float() - b.float()) ** 2).mean(-1)
    return diff[mask].mean()


def hard_loss(logits, labels, task: str):
    import torch.nn.functional as F

    if task == "causal-lm":
        return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100)
    return F.cross_entropy(logits.float(), labels)
