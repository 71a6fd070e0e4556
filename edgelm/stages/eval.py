"""Evaluate accuracy / perplexity / ICL / embedding fidelity of a bundle (its torch model or an exported artifact
on a runtime) against a reference model, so gates can read `accuracy_drop_pt`.

Reference (config `reference`): `auto` = the float torch model of the FIRST `finetune` stage of this run (the
task-adapted model before any compression; a later recovery fine-tune after pruning is part of the compression),
else the run's input model; `input` = the run's input model;
`NN-kind` = that stage folder of the run; `none` = no comparison.

Data: labelled eval examples come from the eval data, else from a held-out 10% split of the run's data;
perplexity reads the eval text (a .txt file, or the eval texts), else calibration prose; `kld` (KL divergence of
the next-token distributions from the reference's, mean / p99, and top-1 agreement) reads the same text in the same
windows (standalone on a run folder, the reference defaults to the run's input model).

ICL probe (`icl`): queries come from the labelled eval data (else the run's data), demonstrations from the run's
data (else from the queries, leave-one-out); template `Input: {text}\nLabel: {label}` and the data's label names
as label words unless `icl_template` / `label_words` say otherwise. Given data is never replaced: a table without
a usable label column fails. Only without data (or with .txt text corpora only) the built-in 80-sentence sentiment
probe runs (its own template, words negative/positive). `icl_data` says which data was probed.
`icl-suite`: the built-in task suite of edgelm.measure.icl_suite, per-task accuracy and, against a reference,
per-task drops.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from edgelm.core.errors import EdgelmError
from edgelm.core.stage import Stage, StageConfig, StageResult, register_stage
from edgelm.core.ui import info
from edgelm.models.loading import load_bundle, load_model
from edgelm.runtimes.base import RUNTIMES
from edgelm.export.formats import PREFERRED

Metric = Literal["accuracy", "perplexity", "kld", "icl", "icl-suite", "fidelity", "generation"]
DEFAULT_METRICS = {"sequence-classification": ["accuracy"], "feature-extraction": ["fidelity"],
                   "causal-lm": ["perplexity", "icl", "generation"]}
PROBE_DATA = Path(__file__).resolve().parents[1] / "recipes" / "sentiment-probe.tsv"
GEN_PROMPTS = ["The capital of France is", "Once upon a time, there was a", "To make a cup of tea, you",
               "The best way to learn a new language is"]


class EvalConfig(StageConfig):
    metrics: list[Metric] = Field(default_factory=list, description="metrics to compute (default by task: accuracy | fidelity | perplexity+icl+generation)", json_schema_extra={"cli": "--metric"})
    runtime: list[str] = Field(default_factory=lambda: ["auto"], description=f"where the candidate runs: auto (the bundle's artifact: {' > '.join(PREFERRED)}, else torch), torch, or a runtime: {', '.join(RUNTIMES.names())}; the first one feeds the gates")
    reference: str = Field("auto", description="reference model: auto (first finetune stage, else the input model), input, a stage folder NN-kind, or none")
    max_samples: int | None = Field(1000, gt=0, description="evaluate at most this many examples (seeded sample)")
    max_length: int = Field(128, gt=1, description="token limit per example for classification / embeddings")
    batch_size: int = Field(32, gt=0, description="examples per forward pass")
    k_shot: int = Field(4, ge=0, description="ICL probe: demonstrations per prompt")
    label_words: list[str] = Field(default_factory=list, description="ICL probe: the word for label 0, 1, ... (default: the data's label names; built-in probe: negative, positive)")
    icl_template: str | None = Field(None, description="ICL probe: prompt per example with {text} and a final {label} (default: 'Input: {text}\\nLabel: {label}'; built-in probe: 'Review: {text}\\nSentiment: {label}'); \\n means a new line")
    icl_samples: int = Field(200, gt=0, description="ICL probe: at most this many queries")
    ppl_window: int = Field(512, gt=1, description="perplexity: tokens of context per window")
    ppl_stride: int = Field(256, gt=0, description="perplexity: tokens the window advances")
    ppl_max_tokens: int = Field(4096, gt=1, description="perplexity: score at most this many tokens of the text")
    fidelity_texts: int = Field(256, gt=0, description="fidelity: texts embedded when there is no eval data")
    gen_tokens: int = Field(16, gt=0, description="generation parity: greedy tokens per prompt")

    @field_validator("icl_template")
    @classmethod
    def _newlines(cls, template: str | None) -> str | None:
        from edgelm.measure.quality import check_template

        return check_template(template.replace("\\n", "\n")) if template is not None else None


@register_stage
class EvalStage(Stage):
    kind = "eval"
    Config = EvalConfig
    summary = "Evaluate accuracy / perplexity / ICL / embedding fidelity against a reference model"

    def run(self, bundle, config: EvalConfig, ctx) -> StageResult:
        from edgelm.measure.quality import torch_model

        metrics = config.metrics or DEFAULT_METRICS[bundle.task]
        reference_bundle, reference_name = find_reference(bundle, config.reference, ctx)
        require_reference(metrics, reference_bundle)
        reference = torch_model(reference_bundle, f"reference:{reference_name}") if reference_bundle else None
        data = EvalData(ctx, config)
        data.model_labels = bundle.labels
        ref_scores = {m: score(m, reference, None, data, config) for m in metrics
                      if reference and m in COMPARABLE and not (m == "perplexity" and joint_text_pass(metrics, reference))}
        by_runtime = {}
        for i, runtime in enumerate(config.runtime):
            if i and (why := optional_runtime_missing(runtime)):  # the first one feeds the gates: it must run
                info(f"eval runtime {runtime}: skipped ({why})")
                by_runtime[runtime] = {"runtime": runtime, "skipped": why}
                continue
            candidate = candidate_model(bundle, runtime)
            by_runtime[candidate.name] = {**compare(metrics, candidate, reference, data, config, ref_scores),
                                          **candidate.info}
        primary = next(iter(by_runtime.values()))
        out = {**primary, "reference": reference_name, "by_runtime": by_runtime}
        if data.source:
            out["eval_data"] = data.source
        if bundle.model is not None:  # what the artifact was exported from: the report's params column
            out["params"] = sum(p.numel() for p in bundle.model.parameters())
        if reference_bundle is not None and reference_bundle.model is not None:
            out["reference_params"] = sum(p.numel() for p in reference_bundle.model.parameters())
        return StageResult(bundle.derive(), out, [])


COMPARABLE = ("accuracy", "perplexity", "icl", "icl-suite")
AGAINST_REFERENCE = ("kld", "fidelity", "generation")  # metrics that only exist against a reference model


def require_reference(metrics, reference_bundle) -> None:
    """Before any scoring: a metric measured against a reference needs one."""
    needing = [m for m in metrics if m in AGAINST_REFERENCE]
    if needing and reference_bundle is None:
        raise EdgelmError(f"eval metric {needing[0]!r} compares with a reference model and this one has none: pass "
                          "--reference MODEL (e.g. the export folder it was quantized from), or in a recipe set "
                          "eval reference to auto or input")


def joint_text_pass(metrics, reference) -> bool:
    """Perplexity and KL divergence both asked, against a reference: one pass of each model over the text gives the
    candidate's and the reference's perplexity and the divergence (the reference's perplexity lands in ref_scores)."""
    return reference is not None and "perplexity" in metrics and "kld" in metrics


def compare(metrics, candidate, reference, data, config, ref_scores) -> dict:
    out = {"runtime": candidate.name}
    joint = {}
    for metric in metrics:
        if metric in ("perplexity", "kld") and joint_text_pass(metrics, reference):
            if not joint:
                from edgelm.measure.quality import perplexity_and_divergence

                joint["perplexity"], ref_perplexity, joint["kld"] = perplexity_and_divergence(
                    candidate, reference, data.text(), window=config.ppl_window, stride=config.ppl_stride,
                    max_tokens=config.ppl_max_tokens)
                ref_scores.setdefault("perplexity", ref_perplexity)
            out.update(joint[metric])
            continue
        out.update(score(metric, candidate, reference, data, config))
    ref = {k: v for scores in ref_scores.values() for k, v in scores.items()}
    if "accuracy" in ref_scores:
        out["reference_accuracy"] = ref["accuracy"]
        out["accuracy_drop_pt"] = round(ref["accuracy"] - out["accuracy"], 3)
    if "icl" in ref_scores:
        out["reference_icl_accuracy"] = ref["icl_accuracy"]
        out["icl_drop_pt"] = round(ref["icl_accuracy"] - out["icl_accuracy"], 3)
        out.setdefault("accuracy_drop_pt", out["icl_drop_pt"])  # a decoder's accuracy is its ICL accuracy
    if "icl-suite" in ref_scores:
        from edgelm.measure.icl_suite import suite_drops

        out.update(suite_drops(out, ref_scores["icl-suite"]))
    if "perplexity" in ref_scores:
        out["reference_perplexity"] = ref["perplexity"]
        out["perplexity_ratio"] = round(out["perplexity"] / ref["perplexity"], 4)
    return out


def score(metric: str, model, reference, data: "EvalData", config: EvalConfig) -> dict:
    from edgelm.measure import quality as ev

    if metric == "accuracy":
        examples = numbered_as_model(data.labelled(), data.model_labels)
        result = ev.evaluate_classification(model, examples, max_length=config.max_length, batch_size=config.batch_size)
        result.pop("predictions")
        return result
    if metric == "perplexity":
        return ev.perplexity(model, data.text(), window=config.ppl_window, stride=config.ppl_stride,
                             max_tokens=config.ppl_max_tokens)
    if metric == "icl":
        task = data.icl_task()
        return {**ev.icl_probe(model, task.demos, task.queries, k=config.k_shot, label_words=task.label_words,
                               seed=data.seed, leave_one_out=task.leave_one_out, template=task.template),
                "icl_data": task.source}
    if metric == "icl-suite":
        from edgelm.measure.icl_suite import icl_suite

        return icl_suite(model, k=config.k_shot, seed=data.seed)
    if metric == "kld":
        return ev.kl_divergence(model, reference, data.text(), window=config.ppl_window, stride=config.ppl_stride,
                                max_tokens=config.ppl_max_tokens)
    if metric == "fidelity":
        return ev.embedding_fidelity(model, reference, data.texts(config.fidelity_texts), max_length=config.max_length,
                                     batch_size=config.batch_size)
    return ev.generation_parity(model, reference, GEN_PROMPTS, max_new_tokens=config.gen_tokens)


def numbered_as_model(examples, model_labels: list[str] | None):
    """Eval labels renumbered by name as the model numbers them (an eval file that lacks a label numbers the rest
    differently), when the model names every eval label; else as they are."""
    names = examples.label_names or []
    if not model_labels or names == model_labels[:len(names)] or not set(names) <= set(model_labels):
        return examples
    index = {name: i for i, name in enumerate(model_labels)}
    return replace(examples, labels=[index[names[y]] for y in examples.labels], label_names=list(model_labels))


def find_reference(bundle, spec: str, ctx):
    """(reference bundle or None, its name) following the rule in this module's docstring."""
    if spec == "none":
        return None, "none"
    previous = list(ctx.previous)
    if spec == "auto":
        tuned = [name for name in previous if name.split("-", 1)[-1] == "finetune"]
        spec = tuned[0] if tuned else "input"
    if spec == "input":
        if ctx.initial_bundle is None:
            raise EdgelmError("eval reference 'input': this run has no input model to compare with")
        return ctx.initial_bundle(), "input"

    folder = Path(ctx.run_dir or ".") / spec
    if spec not in previous or not folder.is_dir():
        raise EdgelmError(f"eval reference {spec!r}: no such earlier stage in this run (have: {', '.join(previous) or 'none'})")
    ref = load_bundle(folder, **ctx.load_options())
    if ref.model is None:
        raise EdgelmError(f"eval reference {spec!r}: that stage holds no torch model")
    return ref, spec


def candidate_model(bundle, runtime: str):
    from edgelm.measure.quality import torch_model

    if runtime == "auto":
        runtime = auto_runtime(bundle.artifacts)
    if runtime == "torch" or runs_torch_on_cpu(runtime):
        return torch_model(bundle, "torch")
    from edgelm.measure.artifacts import artifact_model

    return artifact_model(bundle, runtime)


def optional_runtime_missing(runtime: str) -> str | None:
    """Why a registered runtime cannot run on this machine (an optional library absent), else None."""
    return RUNTIMES.get(runtime).unavailable() if runtime in RUNTIMES else None


def auto_runtime(artifacts) -> str:
    """The preferred artifact (.ort > .onnx > .pte) on the first runtime that loads it without a GPU, else torch."""
    fmt = next((f for f in PREFERRED if f in artifacts), None)
    if fmt is None:
        return "torch"
    on_cpu = (name for name, spec in RUNTIMES.items() if spec.artifact == fmt and spec.device != "cuda")
    runtime = next(on_cpu, None)
    if runtime is None:
        info(f"eval runtime auto: no CPU runtime loads the .{fmt} artifact; evaluating the torch weights")
    return runtime or "torch"


def runs_torch_on_cpu(runtime: str) -> bool:
    """torch-cpu is the torch model itself (eval's torch model runs on the CPU)."""
    return runtime in RUNTIMES and (RUNTIMES.get(runtime).artifact, RUNTIMES.get(runtime).device) == ("torch", "cpu")


class EvalData:
    """The examples and texts each metric reads, loaded once and sampled with the stage seed."""

    model_labels: list[str] | None = None  # the candidate's label names, in id order

    def __init__(self, ctx, config: EvalConfig):
        self.ctx, self.config, self.seed = ctx, config, ctx.seed
        self._cache: dict = {}
        self.source: str | None = None  # where labelled eval examples came from, for the report

    def _load(self, spec):
        from edgelm.data.readers import as_config, load_examples

        return load_examples(as_config(spec, seed=self.seed))

    def _train_and_eval(self):
        if "split" not in self._cache:
            train = self._load(self.ctx.data) if self.ctx.data else None
            held = self._load(self.ctx.eval_data) if self.ctx.eval_data else None
            self.source = self.ctx.eval_data.path if held is not None else None
            if held is None and train is not None and train.labels is not None:
                train, held = train.split(0.1, seed=self.ctx.data.seed)
                self.source = f"held-out 10% of {self.ctx.data.path} (may overlap what a fine-tune trained on; pass --eval-data)"
            self._cache["split"] = (train, held)
        return self._cache["split"]

    def _sample(self, examples, n):
        if examples is None or len(examples) <= n:
            return examples
        import random

        return examples.subset(sorted(random.Random(self.seed).sample(range(len(examples)), n)))

    def labelled(self):
        _, held = self._train_and_eval()
        if held is None or held.labels is None:
            raise EdgelmError("eval metric 'accuracy' needs labelled data: pass --eval-data (or --data) with a label column")
        return self._sample(held, self.config.max_samples)

    def texts(self, n: int) -> list[str]:
        _, held = self._train_and_eval()
        if held is not None:
            return self._sample(held, min(n, self.config.max_samples or n)).texts
        from edgelm.data.readers import calibration_texts

        return calibration_texts(n, seed=self.seed)

    def text(self) -> str:
        for spec in (self.ctx.eval_data, self.ctx.data):
            if spec is not None:
                path = Path(getattr(spec, "path", spec))
                if path.suffix.lower() == ".txt" and path.is_file():
                    from edgelm.data.readers import load_text

                    return load_text(path)
                return "\n\n".join(self._load(spec).texts)
        from edgelm.data.readers import calibration_texts

        return "\n\n".join(calibration_texts(64, seed=self.seed))

    def icl_task(self) -> "IclTask":
        """The user's labelled data when any is given (never a substitute), else the built-in sentiment probe."""
        given = [spec for spec in (self.ctx.data, self.ctx.eval_data) if spec is not None]
        corpora = [spec for spec in given if is_text_corpus(spec)]
        if not given or len(corpora) == len(given):
            note = f" ({', '.join(str(s.path) for s in corpora)}: a text corpus, no labels)" if corpora else ""
            if corpora:
                info(f"in-context probe: the built-in sentiment probe{note}")
            return self._builtin_probe(f"built-in sentiment probe{note}")
        train, held = self._train_and_eval()
        for examples, spec in ((train, self.ctx.data), (held, self.ctx.eval_data)):
            if spec is not None and not is_text_corpus(spec) and (examples is None or examples.labels is None):
                raise EdgelmError(f"{spec.path}: the ICL probe needs a label column and found none; name it with "
                                  "--label-column (the built-in probe runs only without --data/--eval-data)")
        return self._user_task(train, held)

    def _builtin_probe(self, source: str) -> "IclTask":
        from edgelm.data.readers import load_examples
        from edgelm.measure.quality import SENTIMENT_TEMPLATE

        probe = load_examples(str(PROBE_DATA))
        words = self.config.label_words or ["negative", "positive"]
        return IclTask(probe, probe, True, self.config.icl_template or SENTIMENT_TEMPLATE, words, source)

    def _user_task(self, train, held) -> "IclTask":
        from edgelm.measure.quality import ICL_TEMPLATE

        held_labelled = held is not None and held.labels is not None
        separate = held_labelled and train is not None and train.labels is not None  # else leave-one-out on queries
        queries = self._sample(held if held_labelled else train, self.config.icl_samples)
        demos = train if separate else queries
        words = self.config.label_words or list(queries.label_names or demos.label_names or [])
        check_icl_data(demos, queries, self.config.k_shot, not separate, words)
        return IclTask(demos, queries, not separate, self.config.icl_template or ICL_TEMPLATE, words,
                       probed_data(demos, queries, separate))


@dataclass
class IclTask:
    demos: object
    queries: object
    leave_one_out: bool
    template: str
    label_words: list[str]
    source: str  # the icl_data metric: which data was probed


def is_text_corpus(spec) -> bool:
    """A .txt file is prose (perplexity text, calibration), never labelled examples."""
    return Path(str(getattr(spec, "path", spec))).suffix.lower() == ".txt"


def probed_data(demos, queries, separate: bool) -> str:
    """The icl_data figure: which file gave the queries and which the demonstrations."""
    if not separate:
        return f"{queries.source} (demos: the other queries, leave-one-out)"
    if demos.source == queries.source:
        return f"{queries.source} (queries: a held-out 10%, demos: the rest)"
    return f"{queries.source} (demos from {demos.source})"


def check_icl_data(demos, queries, k: int, leave_one_out: bool, words: list[str]) -> None:
    """Every label needs its share of k balanced demos (+1 when the query is left out), and a word."""
    n_labels = max(max(demos.labels), max(queries.labels)) + 1
    if len(words) < n_labels:
        raise EdgelmError(f"{queries.source}: {n_labels} labels but {len(words)} label words {words}; pass --label-words")
    need = -(-k // n_labels) + int(leave_one_out)
    counts = Counter(demos.labels)
    short = [words[y] for y in sorted(set(queries.labels)) if counts[y] < need]
    if short:
        raise EdgelmError(f"{demos.source}: the {k}-shot ICL probe needs at least {need} examples of each label; "
                          f"too few for {', '.join(short)}")


def evaluate_standalone(model: str, config: EvalConfig, *, data=None, eval_data=None, reference: str | None = None,
                        seed: int = 0, task=None, allow_pickle=False, trust_remote_code=False) -> dict:
    """`edgelm eval`: MODEL_OR_OUT is a model, a stage folder or a run folder (its last stage); the reference is
    another MODEL given with --reference (none by default: a lone model has nothing to be compared with)."""
    import tempfile

    from edgelm.core.stage import StageContext

    kw = dict(allow_pickle=allow_pickle, trust_remote_code=trust_remote_code)
    bundle = load_model(str(last_stage_folder(Path(model))) if Path(model).is_dir() else model, task=task, **kw)
    ref_spec = reference or (run_input_model(Path(model)) if "kld" in config.metrics else None)
    config = config.model_copy(update={"reference": "input" if ref_spec else "none"})
    with tempfile.TemporaryDirectory() as tmp:
        ctx = StageContext(workdir=Path(tmp), data=data, eval_data=eval_data, seed=seed, **kw,
                           initial_bundle=(lambda: load_model(ref_spec, task=bundle.task, **kw)) if ref_spec else None)
        result = EvalStage().run(bundle, config, ctx)
    return {"model": model, "task": bundle.task, **result.metrics}


def run_input_model(path: Path) -> str | None:
    """kld without --reference: a run folder's float reference is the model the run started from (said in one line)."""
    from edgelm.core.records import RunRecord

    run = RunRecord.read(path) if path.is_dir() else None
    model = (run.input or {}).get("model") if run else None
    if model:
        info(f"eval kld: reference is the run's input model {model}")
    return model


def last_stage_folder(path: Path) -> Path:
    """A run folder (run.json) stands for its last stage; any other folder for itself."""
    from edgelm.core.records import RunRecord

    run = RunRecord.read(path)
    if run is None:
        return path
    if not run.stages:
        raise EdgelmError(f"{path}/run.json: the run has no finished stage to evaluate")
    return path / run.stages[-1].name
