"""One way to say what is wrong with a validated file: every pydantic error with its field path,
and the YAML files (fleet file, dataset spec, a site's desired state) read through it."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


class Actionable(Exception):
    """A failure a person can act on (a bad file, an unreachable server, a missing engine, a refused
    bundle): its message names what and where, so the command line prints that one line and exits
    2 instead of a traceback. The error classes of those cases derive from it as well as from
    their builtin base, so callers catching ValueError or ConnectionError still do."""


def describe(exc: ValidationError) -> str:
    """`field.path: message; other.path: message` (`<root>` for errors about the whole document)."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or '<root>'}: {e['msg'].removeprefix('Value error, ')}"
                     for e in exc.errors())


def validated_yaml(text: str, where: str, model: type[M], error: type[Exception]) -> M:
    """YAML text validated as `model`; a bad one raises `error` naming `where` and the field path."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise error(f"{where}: not valid YAML: {exc}") from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise error(f"{where}: {describe(exc)}") from None


def validated_yaml_file(path: str | Path, model: type[M], error: type[Exception]) -> M:
    """A YAML file validated as `model`; an unreadable or bad one raises `error` naming the file."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise error(f"{path}: cannot read: {exc}") from None
    return validated_yaml(text, str(path), model, error)
