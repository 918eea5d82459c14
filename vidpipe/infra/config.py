"""What every vidpipe config file shares.

Sections that forbid unknown keys, ``runtime`` fields (kept out of a stage's
options hash), YAML reading, validation errors that name the closest valid
key, and the options hash itself. ``settings`` (the one settings model) and
``ladders`` (the named ladders) are built from these.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from dataclasses import fields
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from vidpipe.infra.errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


class Section(BaseModel):
    """A settings section: unknown keys are errors, values never change."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def runtime(default: Any, **kwargs: Any) -> Any:
    """A field that changes where or how fast a stage runs, never what it outputs.

    Runtime fields stay out of a stage's options hash, so changing them
    (a GPU instead of the CPU, more threads, a bigger batch) re-runs nothing.
    """
    return Field(default, json_schema_extra={"runtime": True}, **kwargs)


def output_options(section: BaseModel) -> dict[str, Any]:
    """The section's fields that change a stage's output (all but ``runtime`` ones)."""
    keep = {
        name
        for name, info in type(section).model_fields.items()
        if not (isinstance(info.json_schema_extra, dict) and info.json_schema_extra.get("runtime"))
    }
    return section.model_dump(mode="json", include=keep)


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


def _fields_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Valid field names of the (sub)model that ``loc`` points into."""
    current: Any = model
    for part in loc[:-1]:
        field = current.model_fields.get(part) if isinstance(part, str) else None
        if field is None or not isinstance(field.annotation, type):
            return list(current.model_fields)
        current = field.annotation
    return list(current.model_fields)


def explain(exc: ValidationError, model: type[BaseModel], source: str) -> ConfigError:
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        dotted = ".".join(str(p) for p in loc)
        if err["type"] == "extra_forbidden":
            valid = _fields_at(model, loc)
            close = difflib.get_close_matches(str(loc[-1]), valid, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(valid)}"
            lines.append(f"unknown key {dotted!r}{hint}")
        else:
            lines.append(f"{dotted}: {err['msg']}")
    return ConfigError(f"invalid configuration ({source}): " + "; ".join(lines))


def options_hash(*parts: BaseModel | dict[str, Any] | str) -> str:
    """A short stable hash of option models, for cache keys."""
    blob = json.dumps(
        [p.model_dump(mode="json") if isinstance(p, BaseModel) else p for p in parts],
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


Options = TypeVar("Options")


def options_from(cls: type[Options], section: BaseModel, **values: Any) -> Options:
    """A model's options (a dataclass): its defaults, with every field its settings section
    also has (same name, same meaning) taken from the section; ``values`` convert the rest."""
    names = {f.name for f in fields(cls)} & set(type(section).model_fields)  # type: ignore[arg-type]
    return cls(**{name: getattr(section, name) for name in names} | values)
