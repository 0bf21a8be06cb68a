"""params.yaml as DVC writes it: YAML 1.2 floats, unknown sections named, an unquoted all-digit hash explained."""

from __future__ import annotations

import copy
import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hybridlm import config
from hybridlm.config import SECTIONS, TrainParams, TtsTrainParams, load_params, schema, section
from hybridlm.params import ParamError, read_yaml
from hybridlm.workspace import SOURCE_ROOT


@pytest.mark.parametrize("text, value", [
    ("3e-4", 3e-4), ("1e+30", 1e30), ("1e30", 1e30), ("1E5", 1e5), ("-2.5e-3", -2.5e-3), (".5", 0.5), ("-.5", -0.5),
    ("5.", 5.0), ("0.001", 0.001), ("1.0e+30", 1e30), (".inf", float("inf")),
])
def test_yaml_1_2_float_forms_are_numbers(tmp_path, text, value):
    path = tmp_path / "params.yaml"
    path.write_text(f"x: {text}\n")
    loaded = read_yaml(path)["x"]
    assert isinstance(loaded, float) and loaded == value


@pytest.mark.parametrize("text, value", [("12", 12), ("-3", -3), ("true", True), ("3e", "3e"), ("e5", "e5"),
                                         ("1.2.3", "1.2.3"), ("'3e-4'", "3e-4"), ("abc1e5", "abc1e5")])
def test_other_scalars_resolve_as_before(tmp_path, text, value):
    path = tmp_path / "p.yaml"
    path.write_text(f"x: {text}\n")
    loaded = read_yaml(path)["x"]
    assert loaded == value and type(loaded) is type(value)


@pytest.mark.parametrize("text, value", [("3e-4", 3e-4), ("1e+30", 1e30), ("1E5", 1e5), (".5", 0.5)])
def test_train_lr_in_every_float_form(tmp_path, text, value):
    path = tmp_path / "params.yaml"
    path.write_text(f"train:\n  lr: {text}\n  steps: 10\n  save_steps: [10]\n")
    assert section(load_params(path), "train").lr == value


@pytest.mark.parametrize("name, hint", [("tokenise", "did you mean 'tokenize'"), ("trian", "did you mean 'train'"),
                                        ("zzz", "known sections")])
def test_unknown_section_is_an_error_naming_it(tmp_path, name, hint):
    path = tmp_path / "params.yaml"
    path.write_text(f"train:\n  steps: 10\n{name}:\n  batch_size: 4\n")
    with pytest.raises(ParamError, match=f"unknown section '{name}'.*{hint}"):
        load_params(path)


def test_the_cli_refuses_an_unknown_section(tmp_path):
    (tmp_path / "params.yaml").write_text("tokenise:\n  batch_size: 4\n")
    result = subprocess.run([str(Path(sys.executable).parent / "hybridlm"), "info"], cwd=tmp_path, capture_output=True,
                            text=True, check=False)
    assert result.returncode == 2
    assert "unknown section 'tokenise'" in result.stderr


@pytest.mark.parametrize("name", ["params.yaml", "other.yaml"])
def test_a_bad_value_names_the_params_file_the_command_read(tmp_path, name):
    params = load_params(SOURCE_ROOT / "params.yaml")
    params["model"]["d_model"] = -4
    (tmp_path / name).write_text(yaml.safe_dump(params))
    result = subprocess.run([str(Path(sys.executable).parent / "hybridlm"), "info", "--params", name], cwd=tmp_path,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert f"error: {name}: 'model.d_model'" in result.stderr, result.stderr
    if name != "params.yaml":
        assert "params.yaml" not in result.stderr


def test_unquoted_all_digit_sha256_says_to_quote_it(tmp_path):
    digits = "1" * 64
    path = tmp_path / "params.yaml"
    path.write_text(f"data:\n  source: synthetic\n  sha256: {digits}\n")
    with pytest.raises(ParamError, match=r"'data\.sha256' must be a string.*as a number.*in quotes"):
        section(load_params(path), "data")
    path.write_text(f"data:\n  source: synthetic\n  sha256: \"{digits}\"\n")
    assert section(load_params(path), "data").sha256 == digits


def test_every_section_of_params_yaml_and_the_demo_overrides_validates():
    params = load_params(SOURCE_ROOT / "params.yaml")
    assert list(params) == list(SECTIONS)  # params.yaml holds every section, in registry order
    load_params(SOURCE_ROOT / "params.demo.yaml")
    for name in SECTIONS:
        assert dataclasses.is_dataclass(section(params, name))


def test_sections_follow_one_naming_rule():
    """<Section>Params for every section (CamelCase: tts_train -> TtsTrainParams); the model schemas are the configs
    the model is built from."""
    model_schemas = {"model": "ModelConfig", "tts_model": "TextConfig"}
    for name, entry in SECTIONS.items():
        expected = model_schemas.get(name, "".join(part.capitalize() for part in name.split("_")) + "Params")
        assert schema(name).__name__ == expected, name
    for name in model_schemas:  # registered lazily: importing config must not import torch
        assert isinstance(SECTIONS[name], str)


def test_config_does_not_import_torch():
    code = "import sys, hybridlm.config; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_resolve_device_names_the_key():
    import torch

    assert config.resolve_device("cpu", "render.device") == torch.device("cpu")
    if not torch.cuda.is_available():
        for name in ("cuda", "cuda:0"):
            with pytest.raises(ParamError, match=f"'render.device' is {name} but there is no such CUDA device"):
                config.resolve_device(name, "render.device")


def schema_keys(name: str) -> list[tuple[str, ...]]:
    """Every key of section ``name`` as a path (``("synthetic", "clips")`` for a nested one), from its schema."""
    def walk(cls: type, prefix: tuple[str, ...]) -> list[tuple[str, ...]]:
        keys = []
        for f in dataclasses.fields(cls):
            nested = f.type if isinstance(f.type, type) and dataclasses.is_dataclass(f.type) else None
            keys += walk(nested, (*prefix, f.name)) if nested and name != "model" else [(*prefix, f.name)]
        return keys
    return walk(schema(name), ())


def with_value(params: dict, name: str, key: tuple[str, ...], value) -> dict:
    """A deep copy of ``params`` with ``params[name][key...] = value``."""
    out = copy.deepcopy(params)
    inner = out[name]
    for part in key[:-1]:
        inner = inner[part]
    inner[key[-1]] = value
    return out


ALL_KEYS = [(name, key) for name in SECTIONS for key in schema_keys(name)]


def test_every_schema_default_is_the_params_yaml_value():
    """One source of defaults: a key deleted from params.yaml takes the value params.yaml documents for it."""
    params = load_params(SOURCE_ROOT / "params.yaml")
    required = {("tts_train", "init_from")}  # a pipeline path: only params.yaml (and so dvc.yaml) names it
    for name in SECTIONS:
        given = {f.name: params[name][f.name] for f in dataclasses.fields(schema(name)) if (name, f.name) in required}
        defaults = dataclasses.asdict(schema(name)(**given))
        listed = dataclasses.asdict(section(params, name))
        if name == "model":  # its text part comes from tts_model, not from model:
            assert set(params[name]) == set(listed) - {"text"} and defaults.pop("text") == listed.pop("text")
        assert set(params[name]) == set(listed), name  # params.yaml lists every key of the schema
        assert defaults == listed, [f"{name}.{k}: default {defaults[k]!r}, params.yaml {listed[k]!r}"
                                    for k in listed if defaults[k] != listed[k]]
    assert len(ALL_KEYS) > 100  # the keys below really are every key


@pytest.mark.parametrize("name, key", ALL_KEYS, ids=[".".join((n, *k)) for n, k in ALL_KEYS])
def test_a_non_finite_value_written_by_hand_is_refused_naming_the_key(tmp_path, name, key):
    """`.inf` and `.nan` in params.yaml, for every key: an error naming it (never a crash later that blames
    another key)."""
    full = ".".join((name, *key))
    for text in (".inf", "-.inf", ".nan"):
        params = with_value(read_yaml(SOURCE_ROOT / "params.yaml"), name, key, text)
        path = tmp_path / "params.yaml"
        path.write_text(yaml.safe_dump(params).replace(f"'{text}'", text))
        with pytest.raises(ParamError, match=re.escape(f"'{full}'")):
            section(load_params(path), name)


def test_tts_train_has_every_train_key_with_the_same_type_in_the_same_order():
    """tts_train is "every train key, own values": a key added to train without its tts_train twin fails here. The
    order too: a checkpoint pickles the section in field order, so it is part of the checkpoint's bytes."""
    train = [(f.name, f.type) for f in dataclasses.fields(TrainParams)]
    assert [(f.name, f.type) for f in dataclasses.fields(TtsTrainParams)][: len(train)] == train


def test_shared_types_have_their_own_defaults_and_rules_per_section():
    """tts_train shares train's types and rules, not its defaults; a rule names the section it was broken in."""
    assert TtsTrainParams(init_from="x").lr == 5e-4 != TrainParams().lr
    with pytest.raises(ParamError, match=r"'tts_train\.decay_steps' \(10\) must be > 'tts_train\.warmup_steps'"):
        TtsTrainParams(init_from="x", decay_steps=10)
    with pytest.raises(ParamError, match=r"'tts_train\.init_from' is missing"):
        section({"tts_train": {}}, "tts_train")
    with pytest.raises(ParamError, match=r"'train\.lr' must be a finite number .*got inf"):
        dataclasses.replace(TrainParams(), lr=float("inf"))  # every construction validates


@pytest.mark.parametrize("value, message", [
    ("tpu", r"'render\.device' must be auto, cpu, cuda or cuda:K"), ("cuda:x", "cuda:K"), ("CPU", "cuda:K"),
    (1, "must be a string"),
])
def test_one_device_type_for_every_section(value, message):
    for name in ("train", "evaluate", "render", "tts_train", "tts_evaluate", "tts_render"):
        with pytest.raises(ParamError, match=message.replace("render", name)):
            section({name: {"device": value, "init_from": "x"} if name == "tts_train" else {"device": value}}, name)
    assert section({"render": {"device": "cuda:1"}}, "render").device == "cuda:1"
    with pytest.raises(ParamError, match=r"'bench --device' must be auto, cpu, cuda or cuda:K"):
        config.resolve_device("tpu", "bench --device")
