"""Typed, validated views of ``params.yaml``.

Why: a typo or an out-of-range value in ``params.yaml`` must fail *before* any work starts, with a message that
names the exact key (``train.batch_size``), not deep inside a stage an hour later. Each stage declares its section
as a dataclass; :func:`parse_section` checks unknown keys, types and ranges against it. Range and choice limits live
in the field metadata (``field(default=..., metadata={"min": 1})``) so they sit next to the default they guard.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")

DEFAULT_PARAMS = Path("params.yaml")


class ParamError(ValueError):
    """A parameter is missing, unknown, of the wrong type or out of range. The message names the key."""


def load_params(path: Path | str = DEFAULT_PARAMS) -> dict[str, Any]:
    """Read ``params.yaml`` (a mapping of stage name to section)."""
    path = Path(path)
    if not path.is_file():
        raise ParamError(f"{path}: params file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ParamError(f"{path}: not valid YAML: {exc}") from exc
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
