"""The one config system: a strict pydantic base and one YAML + ``key=value`` loader.

Every config family (data, fine-tuning, pretraining, eval settings and suites, custom eval
tasks, model shapes) derives from :class:`StrictModel`, and every command that reads a config
goes through :func:`load_config`, so all of them reject unknown keys, accept the same
``a.b=value`` overrides (values parsed as YAML: ``3`` is an int, ``[1e-4]`` a list, ``null``
None) and report errors the same way: the file, then one line per bad key path::

    invalid pretraining config run.yaml:
      optimizer.learning_rate: unknown key
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError

M = TypeVar("M", bound=BaseModel)


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the file, key path(s) and problem."""


class StrictModel(BaseModel):
    """Base of every config model: unknown keys are errors, assignments are validated too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def check_known(value: str, table: Collection[str], what: str) -> str:
    """``value`` when it names an entry of ``table`` (a registry or table keyed by name, looked up
    at call time, so entries registered later count); else a ValueError listing the names."""
    if value not in table:
        raise ValueError(f"unknown {what} {value!r}; choose one of {list(table)}")
    return value


def known_name(table: Collection[str], what: str) -> AfterValidator:
    """A field validator of :func:`check_known`, used as
    ``size: Annotated[str, known_name(SIZE_TABLE, "model size")]``."""
    return AfterValidator(lambda v: check_known(v, table, what))


def read_yaml_mapping(path: str | os.PathLike) -> dict:
    """The top-level mapping of a YAML file (an empty file is ``{}``).

    Raises:
        ConfigError: the file cannot be read, is not valid YAML, or is not a mapping (the message
            names the file).
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    return raw


def parse_overrides(overrides: Sequence[str], flag: str = "key=value") -> dict[str, Any]:
    """``["optimizer.lr=3e-4", "data.builtin.num_samples=8"]`` -> nested dict (YAML values).

    ``flag`` names where the overrides came from (``--set``) in errors. An empty value is None.
    """
    out: dict[str, Any] = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(p.strip() for p in parts):
            raise ConfigError(
                f"{flag} {item!r} is not of the form key=value (e.g. optimizer.lr=1e-4)"
            )
        try:
            parsed = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError as e:
            raise ConfigError(f"{flag} {item!r}: value is not valid YAML ({e})") from None
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p.strip(), {})
            if not isinstance(node, dict):
                raise ConfigError(f"{flag} {item!r} conflicts with another override")
        node[parts[-1].strip()] = parsed
    return out


def merge(base: Mapping, extra: Mapping) -> dict:
    """``base`` with ``extra`` merged in, nested mappings key by key (``extra`` wins)."""
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def format_validation_error(err: ValidationError, what: str, source: str = "") -> str:
    """``invalid <what> config <source>:`` then ``  <key.path>: <problem>`` per error."""
    lines = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"]) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        lines.append(f"  {loc}: {msg}")
    where = f" {source}" if source else ""
    return f"invalid {what} config{where}:\n" + "\n".join(lines)


def _what(model_cls: type[BaseModel]) -> str:
    name = model_cls.__name__.removesuffix("Config")
    return name.lower() or "the"


def load_config(
    source: str | os.PathLike | Mapping[str, Any] | None,
    model_cls: type[M],
    overrides: Sequence[str] | None = None,
    *,
    what: str | None = None,
    flag: str = "key=value",
    source_name: str | None = None,
) -> M:
    """Validate a YAML file or a mapping as ``model_cls``, after ``key=value`` overrides.

    Args:
        source: a YAML file path, an already-read mapping, or None (defaults + overrides).
        model_cls: the pydantic model (a :class:`StrictModel`) to validate against.
        overrides: ``a.b=value`` strings applied over the file (see :func:`parse_overrides`).
        what: the config's name in errors ("pretraining"); default from ``model_cls``.
        flag: the option the overrides came from, for errors (``--set``).
        source_name: how errors name a mapping's origin (default: the file path, or nothing).

    Raises:
        ConfigError: unreadable file, invalid YAML, malformed override, or invalid keys/values
            (every bad key path listed, with the file).
    """
    label = ""
    if source is None:
        data: dict = {}
    elif isinstance(source, Mapping):
        data = dict(source)
    else:
        data = read_yaml_mapping(source)
        label = str(source)
    if overrides:
        data = merge(data, parse_overrides(overrides, flag))
    label = source_name if source_name is not None else label
    try:
        return model_cls.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, what or _what(model_cls), label)) from None
