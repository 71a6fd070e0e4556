"""Knowledge distillation: a (pruned / factorized / layer-dropped) student learns from a teacher.

loss = kd · T²·KL(softmax(teacher/T) ‖ softmax(student/T))     logits, over real (non-padding) positions
     + hard · task loss on the labels                          class labels, or next tokens for LMs
     + hidden · MSE(student hidden_i, teacher hidden_map[i])   through a layer map (same hidden size)
     + attention · MSE of attention maps                       only where the two layers' head counts match

Teacher: config `teacher` (a MODEL), else the first fine-tuned stage of this run, else the run's input model.
The layer map defaults to the layers a `prune --drop-layers` kept (recorded in bundle.extra), else an even
spread. Training runs on edgelm.train.trainer (schedule, precision, early stopping, best weights, resume).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from edgelm.core.errors import EdgelmError
from edgelm.core.stage import Stage, StageConfig, StageResult, register_stage, require_model
from edgelm.models.loading import load_bundle, load_model
from edgelm.train.fields import TrainingFields, reworded
from edgelm.train.precision import Precision


class DistillConfig(StageConfig, TrainingFields):
    teacher: str | None = Field(None, description="teacher MODEL (default: the run's first fine-tuned stage, else its input model)")
    max_steps: int | None = Field(None, gt=0, description="stop after this many optimizer steps (overrides epochs)")
    temperature: float = Field(2.0, gt=0, description="softmax temperature for the logit KL")
    kd_weight: float = Field(1.0, ge=0, description="weight of the logit KL term")
    hard_weight: float = Field(0.5, ge=0, description="weight of the task loss on true labels / next tokens")
    hidden_weight: float = Field(1.0, ge=0, description="weight of the hidden-state MSE through the layer map")
    attention_weight: float = Field(0.0, ge=0, description="weight of the attention-map MSE (layers with equal head counts only; forces eager attention)")
    layer_map: list[int] = Field(default_factory=list, description="teacher layer for each student layer (default: kept layers after a layer drop, else evenly spread)")
    learning_rate: float = Field(5e-5, gt=0, description="peak learning rate")
    batch_size: int = reworded("batch_size", "examples per step")
    weight_decay: float = reworded("weight_decay", "AdamW weight decay")
    precision: Precision = reworded("precision", "training precision (auto: bf16 where native, else fp32)")


@register_stage
class DistillStage(Stage):
    kind = "distill"
    Config = DistillConfig
    summary = "Knowledge distillation from a teacher (logits KL + hidden-state MSE through a layer map)"

    def run(self, bundle, config: DistillConfig, ctx) -> StageResult:
        import copy

        from edgelm.techniques.distill.losses import DistillLoss, features, layer_map
        from edgelm.train.trainer import PadCollator, accuracy_metric, train

        require_model(bundle, self.kind)
        teacher, teacher_name = find_teacher(bundle, config, ctx)
        from edgelm.techniques.vocab.stage import teacher_for_student

        teacher = teacher_for_student(teacher, bundle)  # a vocab-pruned student: the teacher's table cut alike
        check_compatible(bundle, teacher)
        train_ds, eval_ds = features(bundle, config, ctx)
        student = copy.deepcopy(bundle.model).float().train()
        mapping = layer_map(student, teacher.model, config.layer_map, bundle.extra.get("kept_layers"))
        loss = DistillLoss(teacher.model, mapping, config, bundle.task)
        classifier = bundle.task == "sequence-classification"
        cfg = config.train_config(metric="accuracy" if classifier and eval_ds else "loss", seed=ctx.seed,
                                  description="distill")
        pad = bundle.tokenizer.pad_token_id if bundle.tokenizer.pad_token_id is not None else 0
        result = train(student, train_ds, eval_ds, cfg, workdir=checkpoint_dir(bundle, config, ctx),
                       collate_fn=PadCollator(pad), compute_loss=loss,
                       metric_fn=accuracy_metric if classifier else None)
        student.eval()
        metrics = {"teacher": teacher_name, "layer_map": mapping, "samples": len(train_ds),
                   "eval_samples": len(eval_ds or []), "steps": result.steps, "train_seconds": result.seconds,
                   "precision": result.precision, "resumed_from_step": result.resumed_from_step,
                   "loss_terms": loss.last_terms,
                   **{f"eval_{k}": v for k, v in result.metrics.items() if k != "epoch"},
                   "params": sum(p.numel() for p in student.parameters()),
                   "teacher_params": sum(p.numel() for p in teacher.model.parameters())}
        if classifier and eval_ds:
            metrics["teacher_eval_accuracy"] = teacher_accuracy(teacher.model, eval_ds, pad)
            if "eval_accuracy" in metrics:
                metrics["accuracy_drop_pt"] = round(metrics["teacher_eval_accuracy"] - metrics["eval_accuracy"], 3)
        return StageResult(bundle.with_model(student), metrics)


def find_teacher(bundle, config: DistillConfig, ctx):
    """(teacher bundle, name): config.teacher, else the first finetune stage of the run, else the input model."""
    if config.teacher:
        return load_model(config.teacher, **ctx.load_options()), config.teacher  # its own task: a random new head is no teacher
    tuned = [name for name in ctx.previous if name.split("-", 1)[-1] == "finetune"]
    if tuned and ctx.run_dir is not None and (Path(ctx.run_dir) / tuned[0]).is_dir():
        return load_bundle(Path(ctx.run_dir) / tuned[0], **ctx.load_options()), tuned[0]
    if ctx.initial_bundle is None:
        raise EdgelmError("distill: no teacher; pass --teacher MODEL")
    return ctx.initial_bundle(), "input"


def check_compatible(student, teacher) -> None:
    if teacher.model is None:
        raise EdgelmError("distill: the teacher holds no torch model")
    if teacher.task != student.task:
        raise EdgelmError(f"distill: teacher task {teacher.task!r} differs from the student's {student.task!r}; "
                          "fine-tune the teacher for the same task first")
    t_out = teacher.model.get_output_embeddings() if student.task == "causal-lm" else None
    s_out = student.model.get_output_embeddings() if student.task == "causal-lm" else None
    if t_out is not None and s_out is not None and t_out.weight.shape[0] != s_out.weight.shape[0]:
        raise EdgelmError("distill: teacher and student vocabularies differ; logit distillation needs the same tokenizer")
    if student.task == "sequence-classification" and teacher.model.config.num_labels != student.model.config.num_labels:
        raise EdgelmError(f"distill: teacher has {teacher.model.config.num_labels} labels, student "
                          f"{student.model.config.num_labels}")


def checkpoint_dir(bundle, config: DistillConfig, ctx) -> Path:
    from edgelm.techniques.finetune.stage import checkpoint_dir as stable_checkpoint_dir

    return stable_checkpoint_dir(bundle, config, ctx)


def teacher_accuracy(teacher, eval_ds, pad: int, batch_size: int = 64) -> float:
    import torch

    from edgelm.train.trainer import PadCollator

    collate = PadCollator(pad)
    correct = 0
    with torch.no_grad():
        for start in range(0, len(eval_ds), batch_size):
            batch = collate(eval_ds[start:start + batch_size])
            labels = batch.pop("labels")
            correct += int((teacher(**batch).logits.argmax(-1) == labels).sum())
    return round(100 * correct / len(eval_ds), 4)
