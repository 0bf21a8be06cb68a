"""Typed, validated views of ``params.yaml``.

Why: a typo or an out-of-range value in ``params.yaml`` must fail *before* any work starts, with a message that
names the exact key (``train.batch_size``), not deep inside a stage an hour later. This module is the mechanism
(YAML reading, :func:`parse_section`); the schemas of the sections live in hybridlm/config.py. Each section is a
dataclass; :func:`parse_section` checks unknown keys, types and ranges against it. Range and choice limits live
in the field metadata (``field(default=..., metadata={"min": 1})``) so they sit next to the default they guard.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")

class ParamError(ValueError):
    """A parameter is missing, unknown, of the wrong type or out of range. The message names the key."""


class Yaml12Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2's float forms: ``3e-4``, ``1e+30``, ``1E5``, ``-.5``, ``5.``.

    Why: PyYAML follows YAML 1.1, where a float needs a dot and a signed exponent, so ``lr: 3e-4`` loads as the
    *string* "3e-4". DVC reads and writes params.yaml with a YAML 1.2 parser (``dvc exp run -S train.lr=1e30``
    writes ``1e+30``), so both sides must agree that these are numbers. Everything else (ints, bools, strings)
    resolves as before.
    """


Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    # YAML 1.2 core schema floats with a dot or an exponent (plain digits stay ints), plus .inf/.nan.
    re.compile(r"""^(?:[-+]?(?:\.[0-9]+|[0-9]+\.[0-9]*)(?:[eE][-+]?[0-9]+)?
                  |[-+]?[0-9]+[eE][-+]?[0-9]+
                  |[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


def read_yaml(path: Path | str) -> Any:
    """Parse a YAML file the way DVC does (YAML 1.2 floats); a syntax error names the file."""
    path = Path(path)
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=Yaml12Loader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as exc:
        raise ParamError(f"{path}: not valid YAML: {exc}") from exc


def read_params_file(path: Path | str) -> dict[str, Any]:
    """Read a params file (a mapping of section name to section); sections are checked by hybridlm.config."""
    path = Path(path)
    if not path.is_file():
        raise ParamError(f"{path}: params file not found")
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise ParamError(f"{path}: top level must be a mapping of sections, got {type(data).__name__}")
    return data


def parse_section(cls: type[T], params: dict[str, Any], section: str) -> T:
    """Build dataclass ``cls`` from ``params[section]``, validating every key."""
    if section not in params:
        raise ParamError(f"params.yaml: missing section '{section}'")
    return _build(cls, params[section], section)


def _build(cls: type[T], raw: Any, prefix: str) -> T:
    if not isinstance(raw, dict):
        raise ParamError(f"params.yaml: '{prefix}' must be a mapping, got {type(raw).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ParamError(
            f"params.yaml: unknown key '{prefix}.{unknown[0]}' (known keys: {', '.join(sorted(fields))})"
        )
    hints = typing.get_type_hints(cls)
    values = {}
    for name, f in fields.items():
        key = f"{prefix}.{name}"
        if name not in raw:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ParamError(f"params.yaml: missing key '{key}'")
            continue
        value = _coerce(hints[name], raw[name], key)
        check_limits(f.metadata, value, key)
        values[name] = value
    return cls(**values)


def _coerce(hint: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(option, value, key)
            except ParamError as exc:
                errors.append(str(exc))
        raise ParamError(errors[0] if errors else f"params.yaml: '{key}' has an invalid value {value!r}")
    if origin is typing.Literal:
        allowed = typing.get_args(hint)
        if value not in allowed:
            raise ParamError(f"params.yaml: '{key}' must be one of {list(allowed)}, got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise ParamError(f"params.yaml: '{key}' must be a list, got {type(value).__name__} {value!r}")
        (item_hint, *_rest) = typing.get_args(hint) or (Any,)
        items = [_coerce(item_hint, v, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key)
    if hint is Any:
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ParamError(f"params.yaml: '{key}' must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParamError(f"params.yaml: '{key}' must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ParamError(f"params.yaml: '{key}' must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            # e.g. an all-digit sha256: YAML reads it as a number (and drops leading zeros) unless quoted.
            raise ParamError(f"params.yaml: '{key}' must be a string, but YAML read the unquoted value {value!r} "
                             f"as a number; put the value in quotes as written ({key.rsplit('.', 1)[-1]}: \"...\") so that YAML "
                             f"keeps it as text, leading zeros included")
        if not isinstance(value, str):
            raise ParamError(f"params.yaml: '{key}' must be a string, got {value!r}")
        return value
    raise TypeError(f"unsupported parameter type {hint!r} for {key}")


def check_limits(meta: typing.Mapping[str, Any], value: Any, key: str) -> None:
    if value is None:
        return
    values = value if isinstance(value, (list, tuple)) else [value]
    for v in values:
        if "min" in meta and v < meta["min"]:
            raise ParamError(f"params.yaml: '{key}' must be >= {meta['min']}, got {v!r}")
        if "max" in meta and v > meta["max"]:
            raise ParamError(f"params.yaml: '{key}' must be <= {meta['max']}, got {v!r}")
        if "gt" in meta and not v > meta["gt"]:
            raise ParamError(f"params.yaml: '{key}' must be > {meta['gt']}, got {v!r}")
        if "lt" in meta and not v < meta["lt"]:
            raise ParamError(f"params.yaml: '{key}' must be < {meta['lt']}, got {v!r}")
        if "choices" in meta and v not in meta["choices"]:
            raise ParamError(f"params.yaml: '{key}' must be one of {list(meta['choices'])}, got {v!r}")


def params_hash(obj: Any) -> str:
    """Stable SHA-256 of a section (dataclass or plain data): what provenance records and checkpoints compare."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = dataclasses.asdict(obj)
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()
