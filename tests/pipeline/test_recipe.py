import pytest

from edgelm.core.errors import EdgelmError
from edgelm.pipeline.recipe import apply_overrides, dump_recipe, load_recipe, parse_recipe


def write(tmp_path, text):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return path


def test_full_recipe_validates_into_steps(tmp_path):
    recipe = load_recipe(write(tmp_path, """
model: minilm-l6
data: data.tsv
stages:
  - kind: prune
    ffn: 0.5
export: {formats: [onnx, ort]}
gates: {max_size_mb: 25, min_speedup: 2.0}
"""))
    kinds = [k for k, _ in recipe.steps()]
    assert kinds == ["prune", "export"]
    assert recipe.steps()[0][1].ffn == 0.5 and recipe.data.path == "data.tsv"
    assert recipe.gates.min_speedup.value == 2.0 and recipe.gates.min_speedup.runtime == "ort-cpu"
    assert "prune" in dump_recipe(recipe)


@pytest.mark.parametrize("text,message", [
    ("model: [unclosed", "malformed YAML"),
    ("- a\n- b\n", "must be a YAML mapping"),
    ("", "recipe is empty; add a model: and a stages: list"),
    ("# only a comment\n", "recipe is empty; add a model: and a stages: list"),
    ("task:\n", "nothing to run (no stages and no export/eval/bench section); add a model: and a stages: list"),
    ("task: causal-lm\n", "nothing to run"),
    ("gates:\n", "nothing to run"),
    ("gates: {max_size_mb: 5}\n", "nothing to run"),
    ("model: minilm-l6\nstages: []\n", "nothing to run"),
    ("modle: minilm-l6\n", "modle: unknown key"),
    ("stages:\n  - kind: nope\n", "unknown stage kind 'nope'"),
    ("stages:\n  - kind: prune\n    ffn: lots\n", "stages[0].ffn"),
    ("stages:\n  - kind: prune\n    fnn: 0.5\n", "stages[0].fnn: unknown key"),
    ("stages:\n  - prune\n", "stages[0]: Input should be a valid dictionary"),
    ("seed: abc\n", "seed"),
    ("export: {formats: [tflite]}\n", "export.formats[0]"),
    ("gates: {max_size_mb: -1}\n", "gates.max_size_mb"),
    ("stages: [{kind: export}]\ngates: {max_size_mb: {value: 5, stage: 02-quantize}}\n",
     "gates.max_size_mb.stage: 02-quantize is not a stage of this recipe (stages: 01-export)"),
    ("gates: {max_size_mb: {value: 5, stage: quantize}}\n", "gates.max_size_mb.stage"),
    ("!!python/object/apply:os.system ['echo hi']\n", "malformed YAML"),
])
def test_bad_recipes_name_the_field(tmp_path, text, message):
    with pytest.raises(EdgelmError) as info:
        load_recipe(write(tmp_path, text))
    assert message in str(info.value) and "\n" not in str(info.value)
    assert str(info.value).startswith(str(tmp_path / "r.yaml"))  # names the file


def test_gates_take_a_bare_number_or_the_stage_to_read(tmp_path):
    recipe = load_recipe(write(tmp_path, """
stages: [{kind: export}, {kind: quantize}, {kind: export}]
eval: {metrics: [accuracy]}
gates: {max_size_mb: {value: 25, stage: 02-quantize}, max_accuracy_drop: 1.0, min_speedup: {value: 2, stage: 04-eval}}
"""))
    assert recipe.gates.max_size_mb.stage == "02-quantize" and recipe.gates.max_accuracy_drop.stage is None
    assert recipe.gates.named_stages() == {"max_size_mb": "02-quantize", "min_speedup": "04-eval"}
    assert "stage: 02-quantize" in dump_recipe(recipe)


def test_missing_recipe_file(tmp_path):
    with pytest.raises(EdgelmError, match="no such recipe file"):
        load_recipe(tmp_path / "nope.yaml")


def test_set_overrides_nested_keys_and_list_items():
    raw = {"stages": [{"kind": "prune", "ffn": 0.5}], "export": {"formats": ["onnx"]}}
    apply_overrides(raw, ["stages.0.ffn=0.25", "export.optimize=false", "gates.max_size_mb=10", "seed=7"])
    recipe = parse_recipe(raw)
    assert recipe.steps()[0][1].ffn == 0.25 and recipe.steps()[1][1].optimize is False
    assert recipe.gates.max_size_mb.value == 10 and recipe.seed == 7


@pytest.mark.parametrize("override,message", [("noequals", "expected key=value"), ("stages.5.ffn=1", "not an index"),
                                              ("seed.x=1", "not a mapping")])
def test_bad_overrides(override, message):
    with pytest.raises(EdgelmError, match=message):
        apply_overrides({"stages": [{"kind": "prune"}], "seed": 1}, [override])
