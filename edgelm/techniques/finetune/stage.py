"""Fine-tune with PEFT (LoRA / prompt tuning / IA3), bottleneck adapters or fully, then make the result export-ready.

- Encoders learn a classifier from labelled data (a feature-extraction model such as minilm-l6 gets a new head,
  trained alongside the adapter). Decoders learn plain text, prompt/completion pairs or chat messages (loss on
  the completion / assistant turns only), or a labelled set as prompts answered by label words.
- Adapter targets are every Linear inside the transformer blocks (edgelm.models.anatomy finds the block stack),
  so no per-architecture tables; `target_modules` narrows them by name.
- LoRA/IA3 are merged into the base weights (a normal model); prompt tuning's virtual tokens go into
  bundle.extra["prompt_tuning"] and edgelm.models.tasks.task_module prepends them, so export carries them. Bottleneck
  adapters (adapters.py) stay in the graph as recorded structure ops. The adapter is also saved in `adapter/` (PEFT
  format for the PEFT methods). Checkpoints live in a stable folder beside the stage folder, so an
  interrupted run resumes when re-run with the same inputs.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Literal

from pydantic import Field

from edgelm.core.errors import EdgelmError
from edgelm.core.stage import Stage, StageConfig, StageResult, register_stage, require_model
from edgelm.train.fields import TrainingFields

DEFAULT_LR = {"lora": 1e-3, "ia3": 5e-3, "prompt": 3e-2, "adapter": 2e-3, "full": 5e-5}


class FinetuneConfig(StageConfig, TrainingFields):
    method: Literal["lora", "prompt", "ia3", "adapter", "full"] = Field("lora", description="adaptation method "
                                                                         "(adapter: bottleneck adapters)")
    learning_rate: float | None = Field(None, gt=0, description="peak learning rate (default per method: lora 1e-3, "
                                        "ia3 5e-3, prompt 3e-2, adapter 2e-3, full 5e-5)")
    head_learning_rate: float | None = Field(None, gt=0, description="learning rate of a new classifier head "
                                             "(default: max(learning rate, 2e-3))")
    lora_r: int = Field(8, gt=0, description="LoRA rank")
    lora_alpha: float = Field(16.0, gt=0, description="LoRA scaling alpha")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="LoRA dropout")
    target_modules: list[str] = Field(default_factory=list, description="adapt only Linear layers with these names "
                                      "(e.g. query value, q_proj v_proj); default: all in the transformer blocks")
    adapter_reduction: int = Field(16, gt=0, description="adapter: hidden size / bottleneck size")
    adapter_placement: Literal["both", "attention", "ffn"] = Field(
        "both", description="adapter: after the attention output and the FFN (Houlsby), or only one (ffn: Pfeiffer)")
    adapter_activation: Literal["relu", "gelu", "tanh", "silu"] = Field("relu", description="adapter non-linearity")
    adapter_train_norms: bool = Field(True, description="adapter: also train the blocks' LayerNorms, as Houlsby et "
                                      "al. do (a few thousand parameters)")
    num_virtual_tokens: int = Field(16, gt=0, description="prompt tuning: learned virtual tokens")
    label_words: list[str] = Field(default_factory=list, description="causal LM on labelled data: the word answering "
                                   "each label, in label order (e.g. negative positive)")
    prompt_template: str = Field("Review: {text}\nSentiment:", description="causal LM on labelled data: prompt "
                                 "around each text ({text} is replaced)")
    completion_column: str | None = Field(None, description="causal LM: column with the completion (auto: "
                                          "completion, response, output, answer)")
    keep_checkpoints: bool = Field(False, description="keep the resumable checkpoints after success")


@register_stage
class FinetuneStage(Stage):
    kind = "finetune"
    Config = FinetuneConfig
    summary = "Fine-tune with PEFT (LoRA / prompt tuning / IA3), bottleneck adapters or fully; LoRA/IA3 merged for export"

    def run(self, bundle, config: FinetuneConfig, ctx) -> StageResult:
        from edgelm.models.text_tasks import load_splits
        from edgelm.train.trainer import PadCollator, accuracy_metric, train

        require_model(bundle, self.kind)
        train_ex, eval_ex = load_splits(ctx.data, config.selection_data(ctx.eval_data), config.max_samples,
                                         config.eval_fraction, ctx.seed)
        task = output_task(bundle, train_ex)
        job = FinetuneJob(bundle, config, task, train_ex, eval_ex)
        baseline = job.score(bundle) if task == "causal-lm" and job.label_words else {}
        model, head_modules = wrap_peft(job.build_model(), config, task)
        n_trainable = trainable_count(model)
        cfg = train_config(config, task, head_modules, ctx.seed)
        train_ds, eval_ds = job.features()
        result = train(model, train_ds, eval_ds, cfg, workdir=checkpoint_dir(bundle, config, ctx),
                       collate_fn=PadCollator(job.pad_id),
                       metric_fn=accuracy_metric if task == "sequence-classification" else None,
                       keep_checkpoints=config.keep_checkpoints)
        files = save_adapter(model, config, ctx.workdir)
        probe = PadCollator(job.pad_id)([{k: v for k, v in f.items() if k != "labels"} for f in train_ds[:8]])
        reference = trained_logits(model, probe, config, task)
        final_model, extra = export_ready(model, config, job.extra)
        out = bundle.with_model(final_model, task=task, extra=extra)
        metrics = {"method": config.method, "task": task, "train_seconds": result.seconds,
                   "train_cpu_seconds": result.cpu_seconds, "threads": torch_threads(), "samples": len(train_ds),
                   "eval_samples": len(eval_ds or []), "steps": result.steps, "precision": result.precision,
                   "trainable_params": n_trainable, "resumed_from_step": result.resumed_from_step,
                   **{f"eval_{k}": v for k, v in result.metrics.items() if k != "epoch"}, **perplexity(task, result),
                   **{f"zero_shot_{k}": v for k, v in baseline.items()}, **job.score(out),
                   "export_max_abs_diff": export_difference(out, probe, reference)}
        return StageResult(out, metrics, files)


def train_config(config: FinetuneConfig, task: str, head_modules: list[str], seed: int):
    lr = config.learning_rate or DEFAULT_LR[config.method]
    return config.train_config(
        learning_rate=lr, lr_overrides={n: config.head_learning_rate or max(lr, 2e-3) for n in head_modules},
        metric="accuracy" if task == "sequence-classification" else "loss", seed=seed,
        description=f"finetune ({config.method})",
    )


def checkpoint_dir(bundle, config: FinetuneConfig, ctx) -> Path:
    """A stable folder beside the stage's temp folder, keyed by everything the training depends on."""
    from edgelm.core.io import fingerprint

    key = fingerprint([bundle.source, bundle.history, config.model_dump(mode="json"), ctx.seed,
                       ctx.data.model_dump() if ctx.data else None,
                       ctx.eval_data.model_dump() if ctx.eval_data else None])
    base = ctx.workdir.name.removesuffix(".tmp").lstrip(".")
    folder = ctx.workdir.parent / f".{base}.ckpt-{key}"
    for stale in ctx.workdir.parent.glob(f".{base}.ckpt-*"):
        if stale != folder:
            shutil.rmtree(stale, ignore_errors=True)
    return folder


def save_adapter(model, config: FinetuneConfig, workdir: Path) -> list[Path]:
    """The PEFT adapter (before merging), loadable with peft.PeftModel.from_pretrained(base, workdir/adapter)."""
    from edgelm.techniques.finetune.adapters import save_adapters

    if config.method == "full":
        return []
    target = workdir / "adapter"
    if config.method == "adapter":
        return save_adapters(model, recorded_adapters(model), target)
    model.save_pretrained(target, safe_serialization=True)
    return sorted(p for p in target.rglob("*") if p.is_file())


# --- what one run trains on -------------------------------------------------------------------------------------
def output_task(bundle, train_ex) -> str:
    """Decoders stay language models; encoders become classifiers (they need labels)."""
    if bundle.task == "causal-lm":
        return "causal-lm"
    if train_ex.labels is None:
        raise EdgelmError(f"{train_ex.source}: fine-tuning an encoder trains a classifier and needs a label column; "
                          "name it with --label-column")
    return "sequence-classification"


class FinetuneJob:
    """The start model, the features and the scoring of one fine-tuning run."""

    def __init__(self, bundle, config: FinetuneConfig, task: str, train_ex, eval_ex):
        from edgelm.models.text_tasks import aligned_labels, completion_column, resolve_label_words

        if bundle.tokenizer is None:
            raise EdgelmError(f"{bundle.source}: no tokenizer in the input; fine-tuning needs one")
        if bundle.extra.get("prompt_tuning"):
            raise EdgelmError(f"{bundle.source}: already prompt-tuned; fine-tune its base model instead")
        self.bundle, self.config, self.task, self.train_ex, self.eval_ex = bundle, config, task, train_ex, eval_ex
        self.tokenizer = bundle.tokenizer
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self.extra = copy.deepcopy(bundle.extra)
        self.label_words = self.label_names = None
        if task == "sequence-classification":
            self.label_names = list(config.label_words) or train_ex.label_names
            if len(self.label_names) != len(train_ex.label_names):
                raise EdgelmError(f"{train_ex.source}: {len(train_ex.label_names)} labels but "
                                  f"{len(self.label_names)} --label-words")
            for key in ("pooling", "num_labels"):
                self.extra.pop(key, None)
        elif train_ex.labels is not None and completion_column(train_ex, config.completion_column) is None \
                and "messages" not in train_ex.columns:
            self.label_words = resolve_label_words(config.label_words, train_ex.label_names, train_ex.source)
        labelled = train_ex.labels is not None and eval_ex is not None
        self.eval_labels = aligned_labels(train_ex, eval_ex) if labelled else None

    def build_model(self):
        if self.task == "sequence-classification":
            return as_classifier(self.bundle, self.label_names)
        return copy.deepcopy(self.bundle.model).float().train()

    def features(self):
        from edgelm.models.text_tasks import causal_lm_features, classification_features

        c = self.config
        if self.task == "sequence-classification":
            make = lambda ex, labels: classification_features(self.tokenizer, ex.texts, labels, c.max_length)  # noqa: E731
            train_ds = make(self.train_ex, self.train_ex.labels)
            return train_ds, (make(self.eval_ex, self.eval_labels) if self.eval_ex is not None else None)

        def make(ex):
            if ex is not None and self.label_words and ex.labels is not None:
                ex = copy.copy(ex)
                ex.labels = self.eval_labels if ex is self.eval_ex else ex.labels
            return causal_lm_features(self.tokenizer, ex, max_length=c.max_length, label_words=self.label_words,
                                      template=c.prompt_template, completion=c.completion_column)

        return make(self.train_ex), (make(self.eval_ex) if self.eval_ex is not None else None)

    def score(self, bundle) -> dict:
        """Accuracy on the held-out texts, measured on the task module that export uses."""
        from edgelm.models.tasks import model_input_names, task_module
        from edgelm.models.text_tasks import classifier_accuracy, label_word_accuracy

        if self.eval_ex is None or self.eval_labels is None:
            return {}
        module = task_module(bundle)
        if self.task == "sequence-classification":
            acc = classifier_accuracy(module, self.tokenizer, self.eval_ex.texts, self.eval_labels,
                                      model_input_names(bundle), self.config.max_length)
            return {"accuracy": round(100 * acc, 4)}
        if self.label_words:
            acc = label_word_accuracy(module, self.tokenizer, self.eval_ex.texts, self.eval_labels, self.label_words,
                                      self.config.prompt_template)
            return {"accuracy": round(100 * acc, 4)}
        return {}


def as_classifier(bundle, label_names: list[str]):
    """A sequence classifier with len(label_names) outputs: the input's own when it fits, else its encoder under a
    new head (a feature-extraction model such as minilm-l6, or a classifier with another label count)."""
    from transformers import AutoModelForSequenceClassification

    source, n = bundle.model, len(label_names)
    if bundle.task == "sequence-classification" and source.config.num_labels == n:
        model = copy.deepcopy(source)
    else:
        if bundle.extra.get("structure"):
            raise EdgelmError(f"{bundle.source}: a restructured (pruned/factorized) model cannot get a new classifier "
                              "head; fine-tune before compressing it")
        config = copy.deepcopy(source.config)
        config.num_labels, config.architectures = n, None
        model = AutoModelForSequenceClassification.from_config(config)
        missing, unexpected = getattr(model, model.base_model_prefix).load_state_dict(
            source.base_model.state_dict(), strict=False)
        missing, unexpected = ([k for k in keys if not k.startswith("pooler.")] for keys in (missing, unexpected))
        if unexpected or missing:  # a pooler may come (BERT: random init, trained as head) or go (RoBERTa)
            raise EdgelmError(f"{bundle.source}: its weights do not fit a {type(model).__name__} "
                              f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    model.config.id2label = dict(enumerate(label_names))
    model.config.label2id = {name: i for i, name in enumerate(label_names)}
    model.config.problem_type = "single_label_classification"
    return model.float().train()


# --- adapters -----------------------------------------------------------------------------------------------------
def adapter_targets(model, wanted: list[str]) -> dict[str, tuple[int, int]]:
    """{path: (in, out)} of the Linear/Conv1D layers to adapt: all in the transformer blocks, or those named."""
    from edgelm.models.anatomy import block_projections

    found = block_projections(model, remedy="use --method full")
    if not wanted:
        return found
    chosen = {n: s for n, s in found.items() if any(n == w or n.endswith("." + w) for w in wanted)}
    if not chosen:
        leaves = sorted({n.rsplit(".", 1)[-1] for n in found})
        raise EdgelmError(f"--target-modules {' '.join(wanted)}: no such Linear layer in the blocks; "
                          f"available: {', '.join(leaves)}")
    return chosen


def head_modules(model, task: str) -> list[str]:
    """A classifier's head (every top-level module outside the encoder, plus its pooler): trained in full."""
    if task != "sequence-classification":
        return []
    prefix = model.base_model_prefix
    heads = [n for n, m in model.named_children() if n != prefix and any(True for _ in m.parameters())]
    if getattr(getattr(model, prefix, None), "pooler", None) is not None:
        heads.append(f"{prefix}.pooler")
    return heads


def wrap_peft(model, config: FinetuneConfig, task: str):
    """(model ready to train, names of head modules trained in full)."""
    import peft

    heads = head_modules(model, task)
    if config.method == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return model, heads
    if config.method == "adapter":
        from edgelm.techniques.finetune.adapters import adapter_ops, add_adapters

        ops = adapter_ops(model, config.adapter_reduction, config.adapter_placement, config.adapter_activation)
        return add_adapters(model, ops, heads, config.adapter_train_norms), heads
    task_type = "SEQ_CLS" if task == "sequence-classification" else "CAUSAL_LM"
    if config.method == "prompt":
        peft_config = peft.PromptTuningConfig(task_type=task_type, num_virtual_tokens=config.num_virtual_tokens,
                                              prompt_tuning_init="SAMPLE_VOCAB", modules_to_save=heads or None)
    else:
        targets = adapter_targets(model, config.target_modules)
        if config.method == "lora":
            peft_config = peft.LoraConfig(task_type=task_type, r=config.lora_r, lora_alpha=config.lora_alpha,
                                          lora_dropout=config.lora_dropout, target_modules=sorted(targets),
                                          modules_to_save=heads or None)
        else:  # IA3 scales outputs, and the inputs of down projections (in > out) as the paper's FFN vector
            down = sorted(n for n, (i, o) in targets.items() if i > o)
            peft_config = peft.IA3Config(task_type=task_type, target_modules=sorted(targets),
                                         feedforward_modules=down, modules_to_save=heads or None)
    return peft.get_peft_model(model, peft_config), heads


def export_ready(model, config: FinetuneConfig, extra: dict):
    """(plain transformers model, bundle extra): adapters merged, or prompt tuning's virtual tokens recorded."""
    from edgelm.models.text_tasks import encode_prompt

    extra = dict(extra)
    if config.method == "full":
        return model.eval(), extra
    if config.method == "adapter":  # the adapters stay in the graph; a reload replays them from the structure ops
        extra["structure"] = list(extra.get("structure", [])) + recorded_adapters(model)
        return model.eval(), extra
    if config.method == "prompt":
        extra["prompt_tuning"] = encode_prompt(model.get_prompt_embedding_to_save("default"))
        base = model.base_model
        unwrap_modules_to_save(base)
        return base.eval(), extra
    unwrap_modules_to_save(model.base_model.model)  # IA3's merge cannot unwrap a non-Linear head (a pooler)
    return model.merge_and_unload().eval(), extra


def recorded_adapters(model) -> list[dict]:
    """The structure ops of the bottleneck adapters inside `model`, read from the modules themselves."""
    from edgelm.models.structure import Adapted

    return [{"op": "adapter", "path": name, "size": m.adapter.up.out_features, "bottleneck": m.adapter.down.out_features,
             "activation": m.adapter.activation} for name, m in model.named_modules() if isinstance(m, Adapted)]


def unwrap_modules_to_save(model) -> None:
    """Replace PEFT's ModulesToSaveWrapper by the trained copy it holds."""
    from peft.utils import ModulesToSaveWrapper

    from edgelm.models.structure import replace_module

    for name, module in list(model.named_modules()):
        if isinstance(module, ModulesToSaveWrapper):
            replace_module(model, name, module.modules_to_save["default"])


def trained_logits(model, inputs: dict, config: FinetuneConfig, task: str):
    """What the trained (unmerged) model answers, to check the export-ready model against it."""
    import torch

    model.eval()
    with torch.no_grad():
        logits = model(**inputs).logits
    if config.method == "prompt" and task == "causal-lm":
        logits = logits[:, config.num_virtual_tokens:]
    return logits


def export_difference(bundle, inputs: dict, reference) -> float:
    """Largest |difference| between the export task module (merged / prompt-folded) and the trained model."""
    import torch

    from edgelm.models.tasks import model_input_names, task_module

    with torch.no_grad():
        got = task_module(bundle)(**{k: inputs[k] for k in model_input_names(bundle) if k in inputs})
    return float((got - reference).abs().max())


def perplexity(task: str, result) -> dict:
    import math

    loss = result.metrics.get("loss")
    return {"eval_perplexity": round(math.exp(min(loss, 50.0)), 4)} if task == "causal-lm" and loss is not None else {}


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def trainable_count(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
