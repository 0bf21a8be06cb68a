"""params.yaml as DVC writes it: YAML 1.2 floats, unknown sections named, an unquoted all-digit hash explained."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from hybridlm import config
from hybridlm.config import SECTIONS, load_params, schema, section
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
        with pytest.raises(ParamError, match="'render.device' is cuda"):
            config.resolve_device("cuda", "render.device")
