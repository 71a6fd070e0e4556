"""The JS consumer under Node on real bundles: the default MiniLM bundle (`edgelm compress`) and a SmolLM2-135M int4
bundle (export + int4 quantize, no eval: the quick path to the same artifact the cpu recipe ships). Building them
takes minutes (slow); EDGELM_BUNDLE_MINILM / EDGELM_BUNDLE_SMOLLM2 point at already built bundles instead."""

import os

import pytest
import yaml

from tests.conftest import require_builtin
from tests.deliver.js import NodeConsumer, agreement, both_refuse, node_folder

SENTENCES = ["A man is playing a guitar.", "The new movie is awful and far too long.", "Where is the station?"]
PROMPTS = ["The capital of France is", "List three colors:", "def fibonacci(n):"]
SMOLLM2_INT4 = {"name": "smollm2-int4-quick", "stages": [
    {"kind": "export", "formats": ["onnx"]}, {"kind": "quantize", "method": "int4", "block_size": 32, "algorithm": "affine"}]}


def real_bundle(model: str, env: str, tmp_path_factory, recipe: dict | None = None) -> str:
    if os.environ.get(env):
        return os.environ[env]
    require_builtin(model)
    from edgelm.deliver.compress import compress

    base = tmp_path_factory.mktemp(f"real-{model}")
    recipe_path = None
    if recipe:
        recipe_path = base / "recipe.yaml"
        recipe_path.write_text(yaml.safe_dump(recipe))
    return compress(model, base / "run", recipe=recipe_path)["bundle"]


@pytest.fixture(scope="module")
def node():
    return NodeConsumer(node_folder())


def self_test_passes(node: NodeConsumer, bundle) -> bool:
    proc = node.run(bundle, "--self-test")
    return proc.returncode == 0 and proc.stdout.startswith("self-test passed: 3/3")


@pytest.mark.real
@pytest.mark.slow
def test_node_reproduces_python_on_the_default_minilm_bundle(node, tmp_path_factory, tmp_path):
    bundle = real_bundle("minilm-l6", "EDGELM_BUNDLE_MINILM", tmp_path_factory)
    figures = agreement(node, bundle, SENTENCES)
    assert figures["embedding_min_cosine"] > 0.9999 and figures["embedding_max_abs_diff"] < 1e-3, figures
    assert self_test_passes(node, bundle)
    assert both_refuse(node, bundle, tmp_path) == {"node": (2, True), "python": (2, True)}


@pytest.mark.real
@pytest.mark.slow
def test_node_reproduces_python_on_a_smollm2_int4_bundle(node, tmp_path_factory, tmp_path):
    bundle = real_bundle("smollm2-135m", "EDGELM_BUNDLE_SMOLLM2", tmp_path_factory, SMOLLM2_INT4)
    figures = agreement(node, bundle, PROMPTS, max_new=16)
    assert figures["greedy_identical"] == 1.0 and figures["tokens_per_prompt"] > 1, figures
    assert self_test_passes(node, bundle)
    assert both_refuse(node, bundle, tmp_path) == {"node": (2, True), "python": (2, True)}
