"""Typed, validated views of ``params.yaml``: the mechanism (YAML reading, pydantic schemas, error messages).

Why: a typo or an out-of-range value in ``params.yaml`` must fail *before* any work starts, with a message that
names the exact key (``train.batch_size``), not deep inside a stage an hour later. The schemas of the sections live
in hybridlm/config.py (and hybridlm/model.py for the two model sections); this module gives them their form:

- :func:`params_section` makes a class a frozen *pydantic v2 dataclass* that refuses unknown keys
  (``extra="forbid"``) and non-finite floats (``allow_inf_nan=False``). A pydantic dataclass rather than a
  ``BaseModel`` because it keeps the standard dataclass protocol that checkpoints, provenance and hashes are
  built on (``dataclasses.asdict``/``replace``/``fields``): :func:`params_hash` of unchanged values is unchanged.
  Every construction validates, also ``dataclasses.replace`` and configs built in code.
- The field types below (``Int``, ``Float``, ``Bool``, ``Str``) are strict: YAML's ``true`` is no integer, ``"3"``
  no number and ``24000.0`` no sample rate. A key's range or choices sit in its type (``Annotated``, ``Field``,
  ``Literal``); rules between keys are ``model_validator``s that raise :class:`ParamError` naming the keys.
- Whatever fails, the error names ``section.key`` (:func:`describe`), so adding a key is one line in its schema.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import pydantic
import yaml
from pydantic import AfterValidator, ConfigDict, Field, Strict, ValidationError

T = TypeVar("T")

class ParamError(ValueError):
    """A parameter is missing, unknown, of the wrong type or out of range. The message names the key."""


DEFAULT_PARAMS_FILE = "params.yaml"


def naming_file(exc: ParamError, path: Path | str) -> ParamError:
    """``exc`` naming the params file that was actually read. The schemas' messages start with ``params.yaml:``,
    the file every stage reads by default; a command run with ``--params other.yaml`` must blame ``other.yaml``."""
    prefix = f"{DEFAULT_PARAMS_FILE}: "
    text = str(exc)
    if not text.startswith(prefix) or Path(path) == Path(DEFAULT_PARAMS_FILE):
        return exc
    return ParamError(f"{path}: {text[len(prefix):]}")


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


# ------------------------------------------------------------------------------------------------- field types
Int = Annotated[int, Strict()]  # a YAML integer: not a bool, a float or a string
Bool = Annotated[bool, Strict()]  # true or false, not 0/1 or "yes"
Str = Annotated[str, Strict()]  # a YAML string: an unquoted number is refused with a hint (see describe)
# A finite number; a YAML integer is taken as its float (lr: 1 -> 1.0, as params_hash has always seen it).
Float = Annotated[float, Strict(), Field(allow_inf_nan=False)]


def one_of(*choices: Any) -> AfterValidator:
    """A choice among numbers (``Literal`` compares types, and YAML writes ``6`` for ``6.0``)."""

    def check(value: Any) -> Any:
        if value not in choices:
            raise ValueError(f"must be one of {list(choices)}")
        return value

    return AfterValidator(check)


SCHEMA_CONFIG = ConfigDict(extra="forbid", allow_inf_nan=False)


def params_section(name: str) -> Callable[[type[T]], type[T]]:
    """Class decorator: a frozen, validating pydantic dataclass for section ``name`` (``data.synthetic`` for a
    nested one) whose construction errors are :class:`ParamError`s naming ``name.key``."""

    def wrap(cls: type[T]) -> type[T]:
        cls = pydantic.dataclasses.dataclass(frozen=True, config=SCHEMA_CONFIG)(cls)
        cls.SECTION = name  # type: ignore[attr-defined]  (set after: not a field)
        validate = cls.__init__

        @functools.wraps(validate)
        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            try:
                validate(self, *args, **kwargs)
            except ValidationError as exc:
                raise ParamError(describe(exc, cls)) from None

        cls.__init__ = __init__  # type: ignore[method-assign]
        return cls

    return wrap


def parse_section(cls: type[T], params: dict[str, Any], section: str) -> T:
    """Build schema ``cls`` from ``params[section]``, validating every key."""
    if section not in params:
        raise ParamError(f"params.yaml: missing section '{section}'")
    raw = params[section]
    if not isinstance(raw, dict):
        raise ParamError(f"params.yaml: '{section}' must be a mapping, got {type(raw).__name__}")
    unknown = sorted(str(key) for key in raw if not isinstance(key, str) or key not in _fields(cls))
    if unknown:  # also a non-string key, which pydantic would refuse without naming it
        raise ParamError(f"params.yaml: unknown key '{section}.{unknown[0]}' (known keys: {', '.join(_fields(cls))})")
    try:
        return pydantic.TypeAdapter(cls).validate_python(raw)
    except ValidationError as exc:
        raise ParamError(describe(exc, cls, section)) from None


def _fields(cls: type) -> dict[str, Any]:
    return {f.name: f.type for f in dataclasses.fields(cls)}


def describe(exc: ValidationError, cls: type, section: str | None = None) -> str:
    """The first error of ``exc`` as one line naming ``section.key`` (the section of a nested schema is its own)."""
    err = exc.errors(include_url=False)[0]
    key, owner = section or getattr(cls, "SECTION", cls.__name__), cls
    for part in err["loc"]:
        if isinstance(part, int):
            key += f"[{part}]"
            continue
        field = _field_types(owner).get(part)
        owner = field if isinstance(field, type) and dataclasses.is_dataclass(field) else owner
        key += f".{part}"
    cause = (err.get("ctx") or {}).get("error")
    if isinstance(cause, ParamError):  # a rule between keys: its message names them
        return str(cause)
    if err["type"] == "unexpected_keyword_argument":
        return f"params.yaml: unknown key '{key}' (known keys: {', '.join(_fields(owner))})"
    return f"params.yaml: '{key}' {phrase(err)}"


def _field_types(cls: type) -> dict[str, Any]:
    fields = getattr(cls, "__pydantic_fields__", {})
    return {name: info.annotation for name, info in fields.items()}


_PHRASES = {
    "int_type": "must be an integer", "int_from_float": "must be an integer", "int_parsing": "must be an integer",
    "float_type": "must be a number", "float_parsing": "must be a number",
    "finite_number": "must be a finite number (not .inf or .nan)", "bool_type": "must be true or false",
    "string_type": "must be a string", "list_type": "must be a list", "dataclass_type": "must be a mapping",
    "string_too_short": "must not be empty",
}


def phrase(err: Any) -> str:
    """What is wrong with one pydantic error's value, as a predicate: ``must be >= 1, got 0``."""
    kind, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
    if kind in ("missing", "missing_keyword_argument"):
        return "is missing (it has no default)"
    bounds = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}
    if kind in bounds:
        limit = next(iter(ctx.values()))
        text = f"must be {bounds[kind]} {limit}"
    elif kind == "literal_error":
        text = f"must be one of {ctx['expected']}"
    elif kind == "value_error":
        text = str(ctx["error"])
    elif kind == "string_type" and isinstance(value, (int, float)) and not isinstance(value, bool):
        # e.g. an all-digit sha256: YAML reads it as a number (and drops leading zeros) unless quoted.
        return (f"must be a string, but YAML read the unquoted value {value!r} as a number; put the value in "
                f"quotes as written (\"...\") so that YAML keeps it as text, leading zeros included")
    else:
        text = _PHRASES.get(kind, err["msg"])
    return f"{text}, got {value!r}"


def params_hash(obj: Any) -> str:
    """Stable SHA-256 of a section (dataclass or plain data): what provenance records and checkpoints compare."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = dataclasses.asdict(obj)
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()
