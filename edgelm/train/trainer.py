"""The shared training loop (fine-tuning, distillation): transformers Trainer with edgelm's conventions.

`train(model, train_ds, eval_ds, cfg, workdir=...)` runs a seeded loop with warmup + schedule, mixed precision,
gradient accumulation, evaluation each epoch (or every `eval_steps`), early stopping, the best weights kept
(restored into `model` at the end) and resumable checkpoints: a re-run with the same `workdir` continues from
the last checkpoint there. Datasets are sequences of feature dicts (`input_ids`, `attention_mask`, `labels`,
anything else a custom `compute_loss` needs); `PadCollator` pads them per batch.

    result = train(model, train_ds, eval_ds, TrainConfig(epochs=1, learning_rate=5e-4, metric="accuracy"),
                   workdir=ckpt_dir, metric_fn=accuracy_metric)
    result.metrics   # best evaluation: {"loss": ..., "accuracy": ...}
    result.history   # one dict per log / evaluation
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments

from edgelm.core.errors import EdgelmError
from edgelm.core.io import read_json
from edgelm.train.precision import PRECISIONS

BEST_WEIGHTS = "best.safetensors"
BEST_STATE = "best.json"


@dataclass
class TrainConfig:
    epochs: float = 1.0
    max_steps: int | None = None  # overrides epochs when set
    learning_rate: float = 5e-4
    lr_overrides: dict[str, float] = field(default_factory=dict)  # parameter-name substring -> its learning rate
    batch_size: int = 32
    eval_batch_size: int | None = None  # default: 2 x batch_size
    grad_accumulation: int = 1
    warmup_ratio: float = 0.06
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    scheduler: str = "linear"  # any transformers SchedulerType name
    precision: str = "auto"  # auto | fp32 | bf16 | fp16 (see resolve_precision)
    eval_steps: int | None = None  # None: evaluate at the end of every epoch
    save_steps: int = 200  # resumable checkpoint every N optimizer steps
    early_stopping_patience: int | None = None  # evaluations without improvement before stopping
    metric: str = "loss"  # eval metric deciding the best checkpoint and early stopping
    greater_is_better: bool | None = None  # default: False for *loss*, True otherwise
    group_by_length: bool = True  # batches of similar length: less padding, faster on CPU
    seed: int = 0
    log_steps: int = 10
    description: str = "training"

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise EdgelmError(f"precision {self.precision!r}: use one of {', '.join(PRECISIONS)}")

    @property
    def higher_is_better(self) -> bool:
        return self.greater_is_better if self.greater_is_better is not None else "loss" not in self.metric


@dataclass
class TrainResult:
    metrics: dict[str, float]  # the best evaluation (names without the eval_ prefix); {} without eval data
    history: list[dict]  # Trainer log entries: training loss/lr per log step, eval metrics per evaluation
    seconds: float  # wall time of this call (training + evaluations)
    cpu_seconds: float  # CPU time of this process over all its threads (honest on a shared machine)
    steps: int  # optimizer steps done in total (including those before a resume)
    best_step: int | None = None
    resumed_from_step: int | None = None
    precision: str = "fp32"

    def to_dict(self) -> dict:
        return asdict(self)


# --- batching -------------------------------------------------------------------------------------------------
class PadCollator:
    """Pads list-valued features per batch: input_ids with pad_id, labels with -100, masks/types with 0."""

    def __init__(self, pad_id: int, label_pad: int = -100):
        self.pad_id, self.label_pad = pad_id, label_pad

    def __call__(self, features: list[dict]) -> dict:
        batch = {}
        for key in features[0]:
            values = [f[key] for f in features]
            if isinstance(values[0], (list, tuple)) or (hasattr(values[0], "dim") and values[0].dim() == 1):
                longest = max(len(v) for v in values)
                fill = self.pad_id if key == "input_ids" else self.label_pad if key == "labels" else 0
                batch[key] = torch.tensor([list(v) + [fill] * (longest - len(v)) for v in values])
            else:
                batch[key] = torch.as_tensor(values) if not hasattr(values[0], "dim") else torch.stack(values)
        return batch


def accuracy_metric(predictions, labels) -> dict:
    """metric_fn for classifiers: predictions are logits [n, classes]; accuracy in percentage points."""
    import numpy as np

    logits = predictions[0] if isinstance(predictions, tuple) else predictions
    return {"accuracy": 100 * float((np.asarray(logits).argmax(-1) == np.asarray(labels)).mean())}


# --- precision ------------------------------------------------------------------------------------------------
def resolve_precision(precision: str) -> str:
    """auto: bf16 on CUDA when supported (else fp16); on CPU bf16 only with native bf16 (AMX/AVX512-BF16)."""
    cuda = torch.cuda.is_available()
    if precision == "auto":
        if cuda:
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "bf16" if cpu_has_native_bf16() else "fp32"
    if precision == "fp16" and not cuda:
        raise EdgelmError("precision 'fp16': mixed fp16 training needs CUDA; use bf16 or fp32 on CPU")
    return precision


def cpu_has_native_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in flags for f in ("avx512_bf16", "amx_bf16"))


# --- the loop -------------------------------------------------------------------------------------------------
def train(model, train_ds: Sequence[dict], eval_ds: Sequence[dict] | None, cfg: TrainConfig, *, workdir: Path,
          collate_fn: Callable | None = None, compute_loss: Callable | None = None,
          metric_fn: Callable | None = None, preprocess_logits: Callable | None = None,
          callbacks: Sequence[Any] = (), keep_checkpoints: bool = False) -> TrainResult:
    """Train `model` in place; its best evaluated weights are loaded back at the end.

    compute_loss(model, inputs) -> loss or (loss, outputs): replaces the model's own loss (distillation).
    metric_fn(predictions, labels) -> dict: extra eval metrics (predictions = logits unless preprocess_logits
    reduces them); without it evaluation reports the loss only. workdir: stable folder for resumable
    checkpoints; removed after success unless keep_checkpoints.
    """
    if not len(train_ds):
        raise EdgelmError("training data is empty after preprocessing; check --data and --max-samples")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    precision = resolve_precision(cfg.precision)
    args = _training_arguments(cfg, workdir, precision, has_eval=bool(eval_ds), has_metrics=metric_fn is not None)
    keeper = _BestKeeper(cfg, workdir)
    trainer = _EdgelmTrainer(
        model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds or None,
        data_collator=collate_fn or PadCollator(0),
        compute_metrics=(lambda p: metric_fn(p.predictions, p.label_ids)) if metric_fn else None,
        preprocess_logits_for_metrics=preprocess_logits, callbacks=[keeper, _RichProgress(cfg.description), *callbacks],
        loss_fn=compute_loss, lr_overrides=cfg.lr_overrides,
    )
    trainer.remove_callback(PrinterCallback)  # logs go to the progress bar and TrainResult.history, not stdout
    last = _last_checkpoint(workdir)
    started, cpu_started = time.time(), time.process_time()
    with _quiet_hf_progress():
        trainer.train(resume_from_checkpoint=str(last) if last else None)
    seconds, cpu_seconds = time.time() - started, time.process_time() - cpu_started
    _drop_autocast_wrapper(model)
    keeper.restore_best(model)
    history = [dict(h) for h in trainer.state.log_history]
    result = TrainResult(metrics=keeper.best_metrics, history=history, seconds=round(seconds, 3),
                         cpu_seconds=round(cpu_seconds, 3),
                         steps=trainer.state.global_step, best_step=keeper.best_step,
                         resumed_from_step=_step_of(last), precision=precision)
    _barrier()
    if not keep_checkpoints and trainer.is_world_process_zero():
        shutil.rmtree(workdir, ignore_errors=True)
    return result


def _barrier() -> None:
    """Wait for every process of a distributed (accelerate launch / torchrun) run; no-op otherwise."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def _training_arguments(cfg: TrainConfig, workdir: Path, precision: str, has_eval: bool, has_metrics: bool):
    eval_strategy = "no" if not has_eval else ("steps" if cfg.eval_steps else "epoch")
    return TrainingArguments(
        output_dir=str(workdir), num_train_epochs=cfg.epochs, max_steps=cfg.max_steps or -1,
        learning_rate=cfg.learning_rate, lr_scheduler_type=cfg.scheduler, warmup_steps=cfg.warmup_ratio,
        weight_decay=cfg.weight_decay, max_grad_norm=cfg.max_grad_norm,
        per_device_train_batch_size=cfg.batch_size, per_device_eval_batch_size=cfg.eval_batch_size or 2 * cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accumulation, bf16=precision == "bf16", fp16=precision == "fp16",
        eval_strategy=eval_strategy, eval_steps=cfg.eval_steps, prediction_loss_only=not has_metrics,
        save_strategy="steps", save_steps=cfg.save_steps, save_total_limit=1,
        logging_strategy="steps", logging_steps=cfg.log_steps, disable_tqdm=True, report_to="none",
        seed=cfg.seed, data_seed=cfg.seed, remove_unused_columns=False, label_names=["labels"],
        train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
        dataloader_num_workers=0, dataloader_pin_memory=torch.cuda.is_available(), use_cpu=not torch.cuda.is_available(),
        log_level="error",
    )


@contextlib.contextmanager
def _quiet_hf_progress():
    """Checkpoint saves draw their own tqdm bars; ours already shows progress."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _last_checkpoint(workdir: Path) -> Path | None:
    from transformers.trainer_utils import get_last_checkpoint

    last = get_last_checkpoint(str(workdir)) if workdir.is_dir() else None
    return Path(last) if last and (Path(last) / "trainer_state.json").is_file() else None


def _step_of(checkpoint: Path | None) -> int | None:
    return int(checkpoint.name.rsplit("-", 1)[-1]) if checkpoint else None


class _EdgelmTrainer(Trainer):
    """Trainer with a pluggable loss (distillation) and per-parameter-group learning rates (a new head)."""

    def __init__(self, *args, loss_fn=None, lr_overrides=None, **kwargs):
        self._loss_fn, self._lr_overrides = loss_fn, dict(lr_overrides or {})
        super().__init__(*args, **kwargs)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self._loss_fn is None:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        out = self._loss_fn(model, inputs)
        loss, outputs = out if isinstance(out, tuple) else (out, {"loss": out})
        return (loss, outputs) if return_outputs else loss

    def create_optimizer(self, model=None):
        if self.optimizer is None:
            groups = param_groups(self.model, self.args.learning_rate, self.args.weight_decay, self._lr_overrides)
            self.optimizer = torch.optim.AdamW(groups)
        return self.optimizer


def param_groups(model, learning_rate: float, weight_decay: float, lr_overrides: dict[str, float]) -> list[dict]:
    """AdamW groups: trainable parameters, those whose name contains an override key get that learning rate;
    biases and norms get no weight decay."""
    groups: dict[tuple[float, float], list] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        lr = next((v for k, v in lr_overrides.items() if k in name), learning_rate)
        decay = 0.0 if param.ndim < 2 else weight_decay
        groups.setdefault((lr, decay), []).append(param)
    if not groups:
        raise EdgelmError("the model has no trainable parameters; nothing to train")
    return [{"params": ps, "lr": lr, "weight_decay": wd} for (lr, wd), ps in groups.items()]


# --- callbacks ------------------------------------------------------------------------------------------------
class _BestKeeper(TrainerCallback):
    """Keeps the best-evaluated trainable weights on disk (survives resume) and stops early on a plateau."""

    def __init__(self, cfg: TrainConfig, workdir: Path):
        self.cfg, self.workdir = cfg, workdir
        state = read_json(workdir / BEST_STATE)
        self.best_value = state.get("value")
        self.best_metrics: dict = state.get("metrics", {})
        self.best_step: int | None = state.get("step")
        self.stale = state.get("stale", 0)

    def on_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):
        metrics = {k.removeprefix("eval_"): v for k, v in (metrics or {}).items()
                   if isinstance(v, (int, float)) and not k.endswith(("_runtime", "_per_second"))}
        value = metrics.get(self.cfg.metric)
        if value is None:
            raise EdgelmError(f"metric {self.cfg.metric!r} was not computed in evaluation (got {sorted(metrics)})")
        if self._improves(value, metrics.get("loss")):
            self.best_value, self.best_metrics, self.best_step, self.stale = value, metrics, state.global_step, 0
            if state.is_world_process_zero:  # under DDP every rank holds the same weights; one writes them
                _save_trainable(model, self.workdir / BEST_WEIGHTS)
        else:
            self.stale += 1
            patience = self.cfg.early_stopping_patience
            if patience is not None and self.stale >= patience:
                control.should_training_stop = True
        if state.is_world_process_zero:
            _write_json(self.workdir / BEST_STATE, {"value": self.best_value, "metrics": self.best_metrics,
                                                    "step": self.best_step, "stale": self.stale})

    def _improves(self, value: float, loss: float | None) -> bool:
        if self.best_value is None:
            return True
        if value == self.best_value and loss is not None and self.best_metrics.get("loss") is not None:
            return loss < self.best_metrics["loss"]  # a tie on accuracy: the more confident model wins
        return value > self.best_value if self.cfg.higher_is_better else value < self.best_value

    def restore_best(self, model) -> None:
        path = self.workdir / BEST_WEIGHTS
        _barrier()  # rank 0 may still be writing them
        if self.best_step is not None and path.is_file():
            _load_trainable(model, path)


class _RichProgress(TrainerCallback):
    """Progress bar on stderr (edgelm.core.ui) with the latest training loss and eval metric."""

    def __init__(self, description: str):
        self.description, self.bar, self.task, self.status = description, None, None, {}

    def on_train_begin(self, args, state, control, **kwargs):
        from edgelm.core.ui import progress

        self.bar = progress()
        self.bar.start()
        self.task = self.bar.add_task(self.description, total=state.max_steps, status="", completed=state.global_step)

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(self.task, completed=state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        for key, value in (logs or {}).items():
            if key == "loss" or (key.startswith("eval_") and not key.endswith(("_runtime", "_per_second", "_epoch"))):
                self.status[key] = value
        if self.bar is not None:
            self.bar.update(self.task, status=" ".join(f"{k}={v:.4g}" for k, v in self.status.items() if isinstance(v, float)))

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


def _drop_autocast_wrapper(model) -> None:
    """Mixed precision patches `model.forward` with an autocast wrapper; the trained model must compute as it
    is saved (in its own dtype), so the original forward is put back."""
    from accelerate.utils import extract_model_from_parallel

    extract_model_from_parallel(model, keep_fp32_wrapper=False)


def _save_trainable(model, path: Path) -> None:
    from safetensors.torch import save_file

    tensors = {n: p.detach().to("cpu").clone().contiguous() for n, p in model.named_parameters() if p.requires_grad}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp))
    tmp.replace(path)


def _load_trainable(model, path: Path) -> None:
    from safetensors.torch import load_file

    saved = load_file(str(path))
    params = dict(model.named_parameters())
    missing = [n for n in saved if n not in params]
    if missing:
        raise EdgelmError(f"{path}: best weights do not match the model ({missing[:3]}); delete the folder and re-run")
    with torch.no_grad():
        for name, tensor in saved.items():
            params[name].copy_(tensor.to(params[name].device, params[name].dtype))


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, default=float))
    tmp.replace(path)
