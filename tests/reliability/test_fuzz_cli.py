"""Property-based bad input: generated malformed recipes, YAML, --set overrides and CLI arguments.

Every generated case must end with exit code 2, exactly one `error:` line, no traceback, and nothing written.
Cases run in-process (click's CliRunner); a few real processes prove the exit codes a shell sees.
"""

from __future__ import annotations

import itertools
import string

import pytest
import yaml
from annotated_types import Ge, Gt, Le, Lt
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from edgelm.pipeline.recipe import Recipe
from edgelm.core.stage import all_stages
from tests.reliability.helpers import assert_user_error, cli, real_cli

FUZZ = settings(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow,
                                                                       HealthCheck.function_scoped_fixture])
COUNTER = itertools.count()
STAGE_COMMANDS = ("export", "quantize", "finetune", "lowrank", "prune", "distill")

names = st.text(string.ascii_lowercase + "_", min_size=1, max_size=12)
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True), st.text(max_size=12))
junk = st.one_of(scalars, st.lists(scalars, max_size=3), st.dictionaries(names, scalars, max_size=2))
not_a_mapping = st.one_of(scalars, st.lists(scalars, max_size=3))
not_a_list = st.one_of(st.integers(), st.text(max_size=8), st.dictionaries(names, scalars, min_size=1, max_size=2))
not_text = st.one_of(st.integers(), st.floats(), st.lists(scalars, min_size=1, max_size=2),
                     st.dictionaries(names, scalars, min_size=1, max_size=2))
not_a_bool = st.one_of(st.integers(2, 10**6), st.text(string.ascii_lowercase, min_size=6, max_size=10),
                       st.lists(scalars, min_size=1, max_size=2))
not_an_int = st.one_of(st.text(string.ascii_letters, min_size=1, max_size=8), st.floats(0.1, 0.9),
                       st.lists(st.integers(), min_size=1, max_size=2))
non_positive = st.one_of(st.integers(-10**6, 0), st.floats(-1e9, 0.0))


@pytest.fixture(scope="module")
def base(tiny_model, rel_stages):
    """A valid recipe on a tiny model: every case breaks exactly one thing in it."""
    return {"model": str(tiny_model("bert")), "seed": 0, "stages": [{"kind": rel_stages, "scale": 0.01, "files": 0}]}


def run_recipe_cli(tmp_path, raw_text: str, *extra) -> tuple[int, str, object]:
    n = next(COUNTER)
    recipe, out = tmp_path / f"r{n}.yaml", tmp_path / f"out{n}"
    recipe.write_text(raw_text) if isinstance(raw_text, str) else recipe.write_bytes(raw_text)
    code, output = cli("run", recipe, "-o", out, *extra)
    return code, output, out


def expect_refused(tmp_path, raw, *extra):
    text = raw if isinstance(raw, (str, bytes)) else yaml.safe_dump(raw)
    code, output, out = run_recipe_cli(tmp_path, text, *extra)
    assert_user_error(code, output)
    assert not out.exists(), "a refused recipe wrote its output folder"


# --- recipes: one broken field each --------------------------------------------------------------------------
def top_level_breakage():
    fields = set(Recipe.model_fields)
    return st.one_of(
        st.tuples(names.filter(lambda k: k not in fields), junk),            # unknown key
        st.tuples(st.just("seed"), st.one_of(not_an_int, st.integers(max_value=-1), st.integers(min_value=2**32))),
        st.tuples(st.just("name"), st.sampled_from(["../escape", "/abs/path", "a/b", "..", " spaced", ""])),
        st.tuples(st.sampled_from(["data", "eval_data"]), names.map(lambda n: f"/no/such/{n}.tsv")),
        st.tuples(st.just("task"), st.text(max_size=20).filter(lambda t: t not in ("sequence-classification", "feature-extraction", "causal-lm"))),
        st.tuples(st.just("stages"), not_a_list),
        st.tuples(st.sampled_from(["allow_pickle", "trust_remote_code"]), not_a_bool),
        st.tuples(st.sampled_from(["model", "name"]), not_text),
        st.tuples(st.sampled_from(["gates", "data", "eval_data", "export", "eval", "bench"]), st.one_of(st.integers(), st.lists(scalars, min_size=1, max_size=2))),
        st.tuples(st.just("gates"), st.dictionaries(names.filter(lambda k: k not in ("max_accuracy_drop", "min_speedup", "max_size_mb")), scalars, min_size=1, max_size=2)),
        st.tuples(st.just("gates"), st.fixed_dictionaries({"max_size_mb": non_positive})),
        st.tuples(st.just("gates"), st.fixed_dictionaries({"min_speedup": non_positive})),
        st.tuples(st.just("gates"), st.fixed_dictionaries({"max_accuracy_drop": st.one_of(st.floats(-1e6, -0.001), st.text(string.ascii_letters, min_size=1, max_size=5))})),
        st.tuples(st.sampled_from(["data", "eval_data"]), st.fixed_dictionaries({"path": st.just("x.tsv"), "max_samples": st.integers(-5, 0)})),
        st.tuples(st.sampled_from(["data", "eval_data"]), st.fixed_dictionaries({"path": st.just("x.tsv"), "colour": scalars})),
        st.tuples(st.sampled_from(["export", "eval", "bench"]), st.dictionaries(names.filter(lambda k: len(k) > 1), scalars, min_size=1, max_size=2)),
    )


@given(breakage=top_level_breakage())
@FUZZ.__class__(parent=FUZZ, max_examples=120)
def test_recipe_with_a_broken_top_level_field(breakage, base, tmp_path_factory):
    key, value = breakage
    if key in ("export", "eval", "bench") and isinstance(value, dict):
        section = all_stages()[key].Config.model_fields
        assume(not set(value) & set(section))
    expect_refused(tmp_path_factory.getbasetemp(), {**base, key: value})


def bad_field_values(kind: str, wrong_type: bool = True):
    """Values each typed field of a stage config must refuse: out of its range, or of the wrong type."""
    cases = []
    for name, field in all_stages()[kind].Config.model_fields.items():
        for m in field.metadata:
            if not isinstance(m, (Gt, Ge, Lt, Le)):
                continue
            bound = next(getattr(m, a) for a in ("gt", "ge", "lt", "le") if hasattr(m, a))
            if isinstance(m, Gt):
                cases.append(st.tuples(st.just(name), st.sampled_from([bound, bound - 1, -10**6])))
            elif isinstance(m, Ge):
                cases.append(st.tuples(st.just(name), st.sampled_from([bound - 1, -10**6])))
            elif isinstance(m, (Lt, Le)):
                cases.append(st.tuples(st.just(name), st.sampled_from(([bound] if isinstance(m, Lt) else []) + [bound + 1, 10**9])))
        if wrong_type:  # no config field takes a mapping
            cases.append(st.tuples(st.just(name), st.dictionaries(names, scalars, min_size=1, max_size=2)))
    return st.one_of(*cases)


def stage_breakage():
    kinds = sorted(all_stages())
    return st.one_of(
        st.tuples(st.just("entry"), not_a_mapping),
        st.tuples(st.just("no-kind"), st.dictionaries(names.filter(lambda k: k != "kind"), scalars, max_size=2)),
        st.tuples(st.just("kind"), st.text(max_size=15).filter(lambda k: k not in kinds)),
        st.tuples(st.just("kind"), not_text),
        st.tuples(st.just("unknown-param"), st.tuples(st.sampled_from(kinds), names)),
        st.sampled_from(kinds).flatmap(lambda k: st.tuples(st.just("bad-value"), st.tuples(st.just(k), bad_field_values(k)))),
    )


@given(breakage=stage_breakage(), position=st.integers(0, 1))
@FUZZ.__class__(parent=FUZZ, max_examples=120)
def test_recipe_with_a_broken_stage(breakage, position, base, tmp_path_factory):
    what, value = breakage
    if what == "entry":
        entry = value
    elif what == "no-kind":
        entry = value
    elif what == "kind":
        entry = {"kind": value}
    elif what == "unknown-param":
        kind, param = value
        assume(param not in all_stages()[kind].Config.model_fields)
        entry = {"kind": kind, param: 1}
    else:
        kind, (param, bad) = value
        entry = {"kind": kind, param: bad}
    stages = list(base["stages"])
    stages.insert(position, entry)
    expect_refused(tmp_path_factory.getbasetemp(), {**base, "stages": stages})


# --- YAML that is not a recipe at all -----------------------------------------------------------------------
BROKEN_YAML = st.one_of(
    st.just("stages: [unclosed\n"), st.just("model: a: b: c\n"), st.just("\tmodel: x\n"), st.just("model: *nowhere\n"),
    st.just("- just\n- a list\n"), st.just("42\n"), st.just(""), st.just("# only a comment\n"),
    st.just("model: !!python/object/apply:os.system ['touch /tmp/edgelm-pwned']\n"),
    st.just("!!python/object:edgelm.pipeline.recipe.Recipe {}\n"),
    st.text(max_size=40).map(lambda t: "stages: [" + t),                       # never closed
    st.binary(min_size=1, max_size=40).map(lambda b: b"model: x\n\xff\xfe" + b),  # not UTF-8
    st.text(string.printable, max_size=30).map(lambda t: "{" + t.replace("}", "")),
)


@given(text=BROKEN_YAML)
@FUZZ.__class__(parent=FUZZ, max_examples=40)
def test_text_that_is_not_a_recipe(text, tmp_path_factory):
    expect_refused(tmp_path_factory.getbasetemp(), text)


@given(override=st.one_of(
    names,                                                                            # no '='
    st.tuples(st.integers(1, 50), names).map(lambda t: f"stages.{t[0]}.{t[1]}=1"),    # index out of range
    names.map(lambda n: f"seed.{n}=1"),                                               # through a scalar
    st.tuples(names, st.integers()).map(lambda t: f"stages.0.{t[0]}x={t[1]}"),        # unknown stage parameter
    st.sampled_from(["stages.0.scale=-1", "stages.0.files=1000", "seed=abc", "stages=7", "gates.max_size_mb=0",
                     "task=image-classification", "data.max_samples=0", "=1", "stages.x.scale=1"]),
))
@FUZZ.__class__(parent=FUZZ, max_examples=60)
def test_bad_set_override(override, base, tmp_path_factory):
    expect_refused(tmp_path_factory.getbasetemp(), base, "--set", override)


# --- stage command options ----------------------------------------------------------------------------------
def option_breakage():
    def for_kind(kind):
        fields = all_stages()[kind].Config.model_fields
        return st.one_of(
            names.filter(lambda n: n.replace("_", "-") not in {f.replace("_", "-") for f in fields}).map(lambda n: [f"--zz-{n}", "1"]),
            bad_field_values(kind, wrong_type=False).map(
                lambda nv: [(fields[nv[0]].json_schema_extra or {}).get("cli", "--" + nv[0].replace("_", "-")), str(nv[1])]),
            st.sampled_from([["--task", "image-classification"], ["--seed", "abc"], ["--json", "--json", "-o"],
                             ["--seed", str(2**70)], ["--seed", "-1"], ["--data", "/no/such/file.tsv"],
                             ["--data", __file__]]),
        )

    return st.sampled_from(STAGE_COMMANDS).flatmap(lambda k: st.tuples(st.just(k), for_kind(k)))


@given(case=option_breakage())
@FUZZ.__class__(parent=FUZZ, max_examples=100)
def test_stage_command_with_a_bad_option(case, tiny_model, tmp_path_factory):
    kind, option = case
    out = tmp_path_factory.getbasetemp() / f"cmd{next(COUNTER)}"
    code, output = cli(kind, tiny_model("bert"), "-o", out, *option)
    assert_user_error(code, output)
    assert not out.exists()


@given(spec=st.one_of(
    st.text(string.ascii_letters + string.digits + "._-", min_size=1, max_size=30).map(lambda t: "./no/such/" + t),
    st.text(string.ascii_letters + "-", min_size=1, max_size=20).filter(lambda t: t not in ("minilm-l6", "smollm2-135m") and not t.startswith("-")),
    st.text(string.ascii_letters, min_size=1, max_size=10).map(lambda t: t + "/" + t),  # looks like a hub id; offline
))
@FUZZ.__class__(parent=FUZZ, max_examples=40)
def test_info_on_something_that_is_not_a_model(spec):
    code, output = cli("info", spec)
    assert_user_error(code, output)


# --- the real process --------------------------------------------------------------------------------------
@pytest.mark.parametrize("args,expect", [
    (["run", "RECIPE"], "malformed yaml"),
    (["prune", "MODEL", "-o", "OUT", "--heads", "1.5"], "heads"),
    (["info", "MODEL", "--task", "causal-lm"], "no weights"),
])
def test_real_process_exit_code_is_2_without_traceback(args, expect, tiny_model, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("stages: [oops\n")
    subst = {"RECIPE": recipe, "MODEL": tiny_model("bert"), "OUT": tmp_path / "out"}
    proc = real_cli(*[subst.get(a, a) for a in args], env={"HF_HUB_OFFLINE": "1"})
    assert_user_error(proc.returncode, proc.stderr, expect)
    assert not (tmp_path / "out").exists()
