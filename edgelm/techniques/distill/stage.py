"""Knowledge distillation: a (pruned / factorized / layer-dropped) student, or a new BiLSTM, learns from a teacher.

loss = kd · T²·KL(softmax(teacher/T) ‖ softmax(student/T))     logits, over real (non-padding) positions
     + hard · task loss on the labels                          class labels, or next tokens for LMs
     + hidden · MSE(student hidden_i, teacher hidden_map[i])   through a layer map (same hidden size)
     + attention · MSE of attention maps                       only where the two layers' head counts match

Teacher: config `teacher` (a MODEL), else the first fine-tuned stage of this run, else the run's input model.
The layer map defaults to the layers a `prune --drop-layers` kept (recorded in bundle.extra), else an even
spread. The student is a registry choice (students/): `input` (the terms above) or `bilstm` (logit KL + hard labels on
the data plus augmented copies; students/bilstm.py). Training runs on edgelm.train.trainer (schedule, precision, early stopping, best weights, resume).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from edgelm.core.errors import EdgelmError
from edgelm.core.registry import Name
from edgelm.core.stage import Stage, StageConfig, StageResult, register_stage, require_model
from edgelm.models.loading import load_bundle, load_model
from edgelm.techniques.distill.students import STUDENTS
from edgelm.train.fields import TrainingFields, reworded
from edgelm.train.precision import Precision


class DistillConfig(StageConfig, TrainingFields):
    student: Name(STUDENTS) = Field("input", description="the student: input (the run's model, e.g. pruned) or "
                                    "bilstm (a new embedding + BiLSTM classifier on the teacher's tokenizer)")
    teacher: str | None = Field(None, description="teacher MODEL (default: the run's first fine-tuned stage, else its input model)")
    max_steps: int | None = Field(None, gt=0, description="stop after this many optimizer steps (overrides epochs)")
    temperature: float = Field(2.0, gt=0, description="softmax temperature for the logit KL")
    kd_weight: float = Field(1.0, ge=0, description="weight of the logit KL term")
    hard_weight: float = Field(0.5, ge=0, description="weight of the task loss on true labels / next tokens")
    hidden_weight: float = Field(1.0, ge=0, description="weight of the hidden-state MSE through the layer map")
    attention_weight: float = Field(0.0, ge=0, description="weight of the attention-map MSE (layers with equal head counts only; forces eager attention)")
    layer_map: list[int] = Field(default_factory=list, description="teacher layer for each student layer (default: kept layers after a layer drop, else evenly spread)")
    learning_rate: float | None = Field(None, gt=0, description="peak learning rate (default: input 5e-5, bilstm 2e-3)")
    embedding_size: int = Field(128, gt=0, description="bilstm: embedding width (initialised from the teacher's "
                                "embeddings by PCA)")
    lstm_hidden_size: int = Field(128, gt=0, description="bilstm: LSTM state size per direction (and the MLP "
                                  "width); 128: as accurate as 256 on SST-2 and TREC-6, ~2x faster")
    prune_vocab: bool = Field(True, description="bilstm: keep embedding rows only for tokens in the training data "
                              "(+ specials); other tokens read the UNK row")
    augment_copies: int = Field(4, ge=0, description="bilstm: augmented copies per training text, labelled by the "
                                "teacher only (masking, word swaps, n-gram sampling; Tang et al. 2019)")
    mask_prob: float = Field(0.1, ge=0, le=1, description="bilstm augmentation: chance a word becomes the mask token")
    swap_prob: float = Field(0.1, ge=0, le=1, description="bilstm augmentation: chance a word becomes another word "
                             "of the data")
    ngram_prob: float = Field(0.25, ge=0, le=1, description="bilstm augmentation: chance a text is cut to a random "
                              "1..5-gram")
    batch_size: int = reworded("batch_size", "examples per step")
    weight_decay: float = reworded("weight_decay", "AdamW weight decay")
    precision: Precision = reworded("precision", "training precision (auto: bf16 where native, else fp32)")


@register_stage
class DistillStage(Stage):
    kind = "distill"
    Config = DistillConfig
    summary = "Knowledge distillation from a teacher (logits KL + hidden-state MSE through a layer map), or into a BiLSTM"

    def run(self, bundle, config: DistillConfig, ctx) -> StageResult:
        require_model(bundle, self.kind)
        teacher, teacher_name = find_teacher(bundle, config, ctx)
        from edgelm.techniques.vocab.stage import teacher_for_student

        teacher = teacher_for_student(teacher, bundle)  # a vocab-pruned student: the teacher's table cut alike
        return STUDENTS.get(config.student)(bundle, teacher, teacher_name, config, ctx)


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
