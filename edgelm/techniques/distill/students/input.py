"""The `input` student: the run's own model (pruned / layer-dropped / factorized) learns from the teacher through
logits, hidden states through a layer map, and optionally attention maps (edgelm.techniques.distill.losses)."""

from __future__ import annotations

from edgelm.core.stage import StageResult
from edgelm.techniques.distill.students import register_student

DEFAULT_LR = 5e-5


@register_student("input")
def distill_input(bundle, teacher, teacher_name: str, config, ctx) -> StageResult:
    import copy

    from edgelm.techniques.distill.losses import DistillLoss, features, layer_map
    from edgelm.techniques.distill.stage import check_compatible, checkpoint_dir, teacher_accuracy
    from edgelm.train.trainer import PadCollator, accuracy_metric, train

    check_compatible(bundle, teacher)
    train_ds, eval_ds = features(bundle, config, ctx)
    student = copy.deepcopy(bundle.model).float().train()
    mapping = layer_map(student, teacher.model, config.layer_map, bundle.extra.get("kept_layers"))
    loss = DistillLoss(teacher.model, mapping, config, bundle.task)
    classifier = bundle.task == "sequence-classification"
    cfg = config.train_config(metric="accuracy" if classifier and eval_ds else "loss", seed=ctx.seed,
                              description="distill", learning_rate=config.learning_rate or DEFAULT_LR)
    pad = bundle.tokenizer.pad_token_id if bundle.tokenizer.pad_token_id is not None else 0
    result = train(student, train_ds, eval_ds, cfg, workdir=checkpoint_dir(bundle, config, ctx),
                   collate_fn=PadCollator(pad), compute_loss=loss,
                   metric_fn=accuracy_metric if classifier else None)
    student.eval()
    metrics = {"teacher": teacher_name, "layer_map": mapping, **run_metrics(result, train_ds, eval_ds),
               "loss_terms": loss.last_terms, "params": sum(p.numel() for p in student.parameters()),
               "teacher_params": sum(p.numel() for p in teacher.model.parameters())}
    if classifier and eval_ds:
        metrics.update(accuracy_against(teacher_accuracy(teacher.model, eval_ds, pad), metrics))
    return StageResult(bundle.with_model(student), metrics)


def run_metrics(result, train_ds, eval_ds) -> dict:
    return {"samples": len(train_ds), "eval_samples": len(eval_ds or []), "steps": result.steps,
            "train_seconds": result.seconds, "precision": result.precision,
            "resumed_from_step": result.resumed_from_step,
            **{f"eval_{k}": v for k, v in result.metrics.items() if k != "epoch"}}


def accuracy_against(teacher_eval_accuracy: float, metrics: dict) -> dict:
    out = {"teacher_eval_accuracy": teacher_eval_accuracy}
    if "eval_accuracy" in metrics:
        out["accuracy_drop_pt"] = round(teacher_eval_accuracy - metrics["eval_accuracy"], 3)
    return out
