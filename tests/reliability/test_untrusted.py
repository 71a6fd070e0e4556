"""Untrusted files execute nothing they were not allowed to: pickle weights, remote code, YAML tags, and app
bundles whose manifest names files outside the bundle or whose files changed after the manifest was written.

Every hostile file here tries to create a sentinel file; the tests assert it never appears."""

from __future__ import annotations

import json
import pickle
import shutil

import pytest

from tests.reliability.helpers import assert_user_error, cli


class Exploit:
    """Unpickling this runs `open(sentinel, "w")`."""

    def __init__(self, sentinel):
        self.sentinel = str(sentinel)

    def __reduce__(self):
        return (open, (self.sentinel, "w"))


def model_copy(tiny_model, tmp_path, drop_safetensors=True):
    folder = tmp_path / "model"
    shutil.copytree(tiny_model("bert"), folder)
    if drop_safetensors:
        (folder / "model.safetensors").unlink()
    return folder


@pytest.mark.parametrize("name", ["pytorch_model.bin", "model.pt", "model.ckpt"])
def test_pickle_weights_refused_without_allow_pickle(name, tiny_model, tmp_path):
    folder, sentinel = model_copy(tiny_model, tmp_path), tmp_path / "PWNED"
    (folder / name).write_bytes(pickle.dumps({"weights": Exploit(sentinel)}))
    code, output = cli("info", folder)
    assert_user_error(code, output, "pickle weights can run arbitrary code")
    assert not sentinel.exists()


def test_safetensors_win_over_a_hostile_pickle_beside_them(tiny_model, tmp_path):
    folder, sentinel = model_copy(tiny_model, tmp_path, drop_safetensors=False), tmp_path / "PWNED"
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps({"weights": Exploit(sentinel)}))
    for args in (["info", folder], ["info", folder, "--allow-pickle"]):
        code, output = cli(*args)
        assert code == 0, output
    assert not sentinel.exists()


def test_allow_pickle_loads_a_plain_state_dict(tiny_model, tmp_path):
    import torch
    from safetensors.torch import load_file

    folder = model_copy(tiny_model, tmp_path)
    torch.save(load_file(tiny_model("bert") / "model.safetensors"), folder / "pytorch_model.bin")
    assert cli("info", folder)[0] == 2
    code, output = cli("info", folder, "--allow-pickle", "--json")
    assert code == 0, output


def test_remote_code_is_not_run_unless_asked(tiny_model, rel_stages, tmp_path):
    folder, sentinel = model_copy(tiny_model, tmp_path, drop_safetensors=False), tmp_path / "PWNED"
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="evilnet", auto_map={"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel"})
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "evil.py").write_text(f"open({str(sentinel)!r}, 'w').close()\n")
    code, output = cli("info", folder)
    assert_user_error(code, output, "--trust-remote-code")
    assert not sentinel.exists()
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"model: {folder}\nstages: [{{kind: {rel_stages}}}]\n")
    code, output = cli("run", recipe, "-o", tmp_path / "out")
    assert_user_error(code, output, "--trust-remote-code")
    assert not sentinel.exists()


@pytest.mark.parametrize("text", [
    "model: !!python/object/apply:os.system ['touch {s}']\n",
    "!!python/object/new:os.system ['touch {s}']\n",
    "stages:\n  - !!python/object/apply:subprocess.call [['touch', '{s}']]\n",
    "model: !!python/name:os.system\n",
])
def test_yaml_python_tags_are_refused(text, tmp_path):
    sentinel, recipe = tmp_path / "PWNED", tmp_path / "r.yaml"
    recipe.write_text(text.format(s=sentinel))
    code, output = cli("run", recipe, "-o", tmp_path / "out")
    assert_user_error(code, output, "malformed yaml")
    assert not sentinel.exists() and not (tmp_path / "out").exists()


def test_set_override_cannot_smuggle_a_python_tag(tmp_path):
    sentinel, recipe = tmp_path / "PWNED", tmp_path / "r.yaml"
    recipe.write_text("stages: []\n")
    code, output = cli("run", recipe, "-o", tmp_path / "out", "--set", f"name=!!python/object/apply:os.system ['touch {sentinel}']")
    assert_user_error(code, output)
    assert not sentinel.exists()


# --- the app bundle's consumer -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def app_bundle(tiny_model, tmp_path_factory):
    try:
        from tests.deliver.runs import tiny_run
    except ImportError as exc:
        pytest.skip(f"compress bundle not available: {exc}")
    return tiny_run("classifier", tiny_model, tmp_path_factory)["bundle"]


def consume(folder, capsys) -> tuple[int, str]:
    from edgelm.deliver.consumer import main

    code = main([str(folder), "a great movie"])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def hostile_manifest(folder, name, tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("secret")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"][name] = {"sha256": "0" * 64, "bytes": 6}
    (folder / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("name", ["../outside.txt", "/etc/passwd", "sub/../../outside.txt", "..", "~/.ssh/id_rsa"])
def test_consumer_refuses_file_names_that_leave_the_bundle(name, app_bundle, tmp_path, capsys):
    folder = tmp_path / "bundle"
    shutil.copytree(app_bundle, folder)
    hostile_manifest(folder, name, tmp_path)
    code, output = consume(folder, capsys)
    assert code == 2 and "not a plain file name" in output and "Traceback" not in output


def test_consumer_refuses_a_symlink_out_of_the_bundle(app_bundle, tmp_path, capsys):
    folder = tmp_path / "bundle"
    shutil.copytree(app_bundle, folder)
    (tmp_path / "outside.json").write_text((folder / "tokenizer.json").read_text())
    (folder / "tokenizer.json").unlink()
    (folder / "tokenizer.json").symlink_to(tmp_path / "outside.json")
    code, output = consume(folder, capsys)
    assert code == 2 and "link" in output


@pytest.mark.parametrize("how", ["truncate", "flip-byte", "append"])
def test_consumer_refuses_a_model_whose_sha256_differs(how, app_bundle, tmp_path, capsys):
    folder = tmp_path / "bundle"
    shutil.copytree(app_bundle, folder)
    model = folder / json.loads((folder / "manifest.json").read_text())["bundle"]["model"]
    data = bytearray(model.read_bytes())
    if how == "truncate":
        data = data[:-100]
    elif how == "flip-byte":
        data[len(data) // 2] ^= 0xFF
    else:
        data += b"\0"
    model.write_bytes(bytes(data))
    code, output = consume(folder, capsys)
    assert code == 2 and "sha256 mismatch" in output


@pytest.mark.parametrize("manifest", ["[]", '{"files": []}', '{"files": {"model.onnx": "abc"}}', "{not json", '"text"'])
def test_consumer_refuses_a_malformed_manifest(manifest, app_bundle, tmp_path, capsys):
    folder = tmp_path / "bundle"
    shutil.copytree(app_bundle, folder)
    (folder / "manifest.json").write_text(manifest)
    code, output = consume(folder, capsys)
    assert code == 2 and "Traceback" not in output
