"""One way to say what is wrong with a validated file: every pydantic error with its field path."""

from __future__ import annotations

from pydantic import ValidationError


def describe(exc: ValidationError) -> str:
    """`field.path: message; other.path: message` (`<root>` for errors about the whole document)."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or '<root>'}: {e['msg'].removeprefix('Value error, ')}"
                     for e in exc.errors())
