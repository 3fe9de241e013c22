"""Writes docs/api.md from the docstrings of laplace_tf's public names (tests check it is current).

Run: python docs/make_api.py
"""

from __future__ import annotations

import enum
import inspect
from pathlib import Path

import laplace_tf as lt

OUT = Path(__file__).with_name("api.md")


def render() -> str:
    lines = [
        "# API reference",
        "",
        "Generated from the docstrings by `docs/make_api.py`; every name is importable as `lt.<name>`",
        "after `import laplace_tf as lt`.",
        "",
    ]
    for name in lt.__all__:
        obj = getattr(lt, name)
        lines += _entry(name, obj)
    return "\n".join(lines).rstrip() + "\n"


def _entry(name: str, obj: object) -> list[str]:
    if inspect.ismodule(obj):
        lines = [f"## `{name}` (module)", "", _doc(obj), ""]
        for member_name in obj.__all__:
            member = getattr(obj, member_name)
            if inspect.isfunction(member):
                lines += [f"### `{name}.{member_name}{_signature(member)}`", "", _doc(member), ""]
        return lines
    if isinstance(obj, type) and issubclass(obj, enum.Enum):
        values = ", ".join(f"`{member.value}`" for member in obj)
        return [f"## `{name}`", "", _doc(obj), "", f"Values: {values}.", ""]
    if inspect.isclass(obj):
        lines = [f"## `{name}{_signature(obj)}`", "", _doc(obj), ""]
        for member_name, member in inspect.getmembers(obj):
            if member_name.startswith("_"):
                continue
            if inspect.isfunction(member):
                lines += [f"### `{name}.{member_name}{_signature(member, drop_self=True)}`", "", _doc(member), ""]
            elif isinstance(member, property) and member.__doc__:
                lines += [f"### `{name}.{member_name}` (property)", "", _doc(member), ""]
        return lines
    return [f"## `{name}{_signature(obj)}`", "", _doc(obj), ""]


def _signature(obj: object, drop_self: bool = False) -> str:
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        return ""
    if drop_self:
        signature = signature.replace(parameters=list(signature.parameters.values())[1:])
    return str(signature)


def _doc(obj: object) -> str:
    return inspect.cleandoc(obj.__doc__ or "")


if __name__ == "__main__":
    OUT.write_text(render())
    print(f"wrote {OUT}")
