"""Bad input found by machine, not by hand (issue 14 item 7).

For every key of every params section (the list is derived from the schemas, so a new key is covered the day it is
added) and every option of `hybridlm say`, hypothesis draws values of the wrong type, out of range, non-finite,
huge, negative, empty and unicode. Two outcomes only: success, or the project's error naming the key or option
(exit 2 from the CLI) - never a traceback, never a half-written output. Validation only: no training, no model;
`say` gets a missing or a tiny non-checkpoint file, and every bad option must be refused before it is read.
Derandomised (the same draws every run) so that the suite stays deterministic.
"""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_params import ALL_KEYS, with_value
from typer.testing import CliRunner

from hybridlm.cli import app
from hybridlm.config import load_params, section
from hybridlm.model import with_text
from hybridlm.params import ParamError
from hybridlm.workspace import SOURCE_ROOT

PARAMS = load_params(SOURCE_ROOT / "params.yaml")
SETTINGS = settings(max_examples=40, deadline=None, derandomize=True, database=None)

NUMBERS = st.one_of(
    st.integers(), st.integers(min_value=2**63), st.integers(max_value=-1), st.just(0),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.inf, -math.inf, math.nan, 1e308, -1e308, 5e-324, -0.0, 0.5, 1e9]),
)
TEXTS = st.one_of(st.just(""), st.text(max_size=40), st.text(st.characters(min_codepoint=0x80), max_size=10),
                  st.sampled_from([" ", "auto", "cuda:99", "fp16", "3e-4", "1" * 64, "-1", ".inf"]))
VALUES = st.one_of(st.none(), st.booleans(), NUMBERS, TEXTS, st.lists(st.one_of(NUMBERS, TEXTS), max_size=4),
                   st.dictionaries(st.text(max_size=5), NUMBERS, max_size=2))


def validate(params: dict, name: str) -> None:
    """Section ``name`` as the stages read it (tts_model together with the decoder it conditions)."""
    cfg = section(params, name)
    if name == "tts_model":
        with_text(section(params, "model"), cfg)


def near(value):
    """Values around a valid one: its neighbours, its negative, a huge and a tiny multiple (often valid)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return st.just(value)
    return st.sampled_from([value + 1, value - 1, -value, value * 1000, value / 1000, type(value)(0)])


@pytest.mark.parametrize("name, key", ALL_KEYS, ids=[".".join((n, *k)) for n, k in ALL_KEYS])
def test_any_value_of_any_params_key_passes_or_is_refused_naming_it(name, key):
    full = ".".join((name, *key))
    default = PARAMS[name]
    for part in key:
        default = default[part] if isinstance(default, dict) and part in default else None

    @SETTINGS
    @given(value=st.one_of(VALUES, near(default)))
    def check(value):
        try:
            validate(with_value(PARAMS, name, key, value), name)
        except ParamError as exc:
            assert f"'{full}" in str(exc), str(exc)  # 'train.lr' or 'train.save_steps[1]'

    check()


@SETTINGS
@given(section_name=st.sampled_from(sorted(PARAMS)), key=st.text(min_size=1, max_size=12))
def test_an_unknown_key_is_refused_naming_it(section_name, key):
    params = copy.deepcopy(PARAMS)
    if key in params[section_name]:
        return
    params[section_name][key] = 1
    with pytest.raises(ParamError, match="unknown key"):
        validate(params, section_name)


# --------------------------------------------------------------------------------------------------------------- say
SAY_OPTIONS = {"--cfg-scale": 3.0, "--seed": 0, "--temperature": 1.0, "--top-k": 250, "--max-seconds": 12.0,
               "--device": "cpu"}
OPTION_VALUES = st.one_of(NUMBERS.map(str), TEXTS, st.sampled_from(["inf", "nan", "-inf", "1e309", "99999999999999999999",
                                                                    "tpu", "cuda", "cuda:7", "1e9", "0", "-1"]))


def test_say_options_come_from_the_cli():
    """The options drawn below are every option of `say` (so a new one needs a mirror and a strategy here)."""
    command = next(c for c in app.registered_commands if c.callback.__name__ == "say")
    names = {p.replace("_", "-") for p in command.callback.__annotations__} - {"return"}
    assert {f"--{n}" for n in names} == {*SAY_OPTIONS, "--text", "--checkpoint", "--out"}
    assert set(MIRRORS) == set(SAY_OPTIONS)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("say")
    (root / "tiny.pt").write_bytes(b"not a checkpoint")
    (root / "a-file").write_text("x")
    (root / "outs").mkdir()
    return {"root": root, "tiny": root / "tiny.pt", "missing": root / "missing.pt", "file": root / "a-file",
            "outs": root / "outs"}


def run_say(files: dict[str, Path], option: str, value: str, text: str = "A word.") -> tuple[str, Path]:
    options = {**SAY_OPTIONS, "--checkpoint": str(files["missing"]), "--out": str(files["outs"] / "speech.wav")}
    options[option] = value
    argv = ["say", *[part for pair in options.items() for part in pair], "--", text]
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), (argv, result.output, result.exception)
    assert "Traceback" not in result.output
    assert not any(files["outs"].iterdir()), list(files["outs"].iterdir())  # nothing written, not even a temporary
    return " ".join(result.output.split()), Path(options["--checkpoint"])


# The tts_render key each option mirrors, and how the CLI parses it: the oracle for which values are bad.
MIRRORS = {"--cfg-scale": ("cfg_scale", float), "--seed": ("seed", int), "--temperature": ("temperature", float),
           "--top-k": ("top_k", int), "--max-seconds": ("max_seconds", float), "--device": ("device", str)}


def refused_in_params(option: str, value: str) -> bool:
    key, parse = MIRRORS[option]
    try:
        section({"tts_render": {key: parse(value)}}, "tts_render")
    except (ValueError, ParamError):  # not a number at all (the CLI's parser refuses it), or a bad tts_render value
        return True
    return False


@pytest.mark.parametrize("option", sorted(SAY_OPTIONS))
def test_any_value_of_any_say_option_is_refused_naming_it_or_reaches_the_checkpoint(files, option):
    """What tts_render refuses, `say` refuses naming the option, before reading the checkpoint; a good value gets
    as far as the (missing) checkpoint."""
    @SETTINGS
    @given(value=OPTION_VALUES)
    def check(value):
        output, checkpoint = run_say(files, option, value)
        assert option in output or (not refused_in_params(option, value)
                                    and f"{checkpoint}: checkpoint not found" in output), output

    check()


@SETTINGS
@given(text=st.one_of(TEXTS, st.text(min_size=300, max_size=3000)),
       out=st.sampled_from(["outs", "file-child", "outs-dir", "root"]),
       checkpoint=st.sampled_from(["missing", "tiny", "outs"]))
def test_any_text_out_and_checkpoint_is_refused_naming_what_is_wrong(files, text, out, checkpoint):
    paths = {"outs": files["outs"] / "speech.wav", "file-child": files["file"] / "speech.wav",
             "outs-dir": files["outs"], "root": files["root"]}
    options = {**SAY_OPTIONS, "--checkpoint": str(files[checkpoint]), "--out": str(paths[out])}
    argv = ["say", *[part for pair in options.items() for part in pair], "--", text]
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), (argv, result.output, result.exception)
    output = " ".join(result.output.split())
    named = ("--out" in output, "the text" in output, str(files[checkpoint]) in output)
    assert any(named), output
    assert not any(files["outs"].iterdir()) and not (files["file"] / "speech.wav").exists()


@pytest.mark.parametrize("option, value, message", [
    ("--out", "outs", r"--out .*outs is a directory"),
    ("--out", "file-child", r"--out .*a-file is a file"),
    ("--cfg-scale", "inf", r"--cfg-scale must be a finite number"),
    ("--cfg-scale", "nan", r"--cfg-scale must be a finite number"),
    ("--cfg-scale", "1000", r"--cfg-scale must be <= 100"),
    ("--temperature", "inf", r"--temperature must be a finite number"),
    ("--temperature", "0", r"--temperature must be >= 0.001"),
    ("--max-seconds", "inf", r"--max-seconds must be a finite number"),
    ("--max-seconds", "nan", r"--max-seconds must be a finite number"),
    ("--max-seconds", "1e9", r"--max-seconds must be <= 60"),
    ("--seed", "99999999999999999999", r"--seed must be in 0 \.\. 2\^64 - 1 .*got 99999999999999999999"),
    ("--seed", "-1", r"--seed must be in 0 \.\. 2\^64 - 1 .*got -1"),
    ("--device", "tpu", r"--device must be auto, cpu, cuda or cuda:K"),
    ("--top-k", "0", r"--top-k must be >= 1"),
])
def test_each_bad_option_of_the_issue_is_refused_before_the_checkpoint_is_read(files, option, value, message):
    value = {"outs": str(files["outs"]), "file-child": str(files["file"] / "x.wav")}.get(value, value)
    output, _ = run_say({**files, "missing": files["tiny"]}, option, value)
    assert re.search(message, output) and "checkpoint" not in output, output


def test_a_text_that_cannot_fit_in_max_seconds_is_refused(files):
    output, _ = run_say(files, "--max-seconds", "12", text="word " * 1000)
    assert "the text has 4999 characters" in output and "needs 200.0 s, more than --max-seconds 12" in output
    assert "split it" in output
    output, _ = run_say(files, "--max-seconds", "12", text="a" * 400)
    assert "raise --max-seconds to at least 16.0" in output
    output, _ = run_say(files, "--max-seconds", "17", text="a" * 400)  # fits: on to the (missing) checkpoint
    assert "checkpoint not found" in output
