"""Every public name of the core has a docstring: ``ipamcore.__all__``, every public module
of ``ipamcore``, the public classes and functions each defines, and their public methods and
properties (a docstring inherited from a base class counts)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import ipamcore


def public_modules() -> list[ModuleType]:
    names = [m.name for m in pkgutil.walk_packages(ipamcore.__path__, "ipamcore.")]
    public = [n for n in names if not any(p.startswith("_") for p in n.split("."))]
    return [ipamcore, *(importlib.import_module(n) for n in public)]


def documented(obj: Any) -> bool:
    return bool((inspect.getdoc(obj) or "").strip())


def members(cls: type) -> Iterator[tuple[str, Any]]:
    for name, value in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(value, property):
            yield name, value.fget
        elif isinstance(value, (staticmethod, classmethod)):
            yield name, value.__func__
        elif inspect.isfunction(value):
            yield name, getattr(cls, name)


def undocumented() -> list[str]:
    missing: list[str] = []
    for module in public_modules():
        if not documented(module):
            missing.append(module.__name__)
        for name, obj in vars(module).items():
            if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
                continue
            if not (inspect.isclass(obj) or inspect.isfunction(obj)):
                continue
            own_doc = obj.__doc__ if inspect.isfunction(obj) else vars(obj).get("__doc__")
            if not (own_doc or "").strip():
                missing.append(f"{module.__name__}.{name}")
            if inspect.isclass(obj):
                missing += [
                    f"{module.__name__}.{name}.{member}"
                    for member, value in members(obj)
                    if not documented(value)
                ]
    return missing


def test_all_names_exist_and_are_documented() -> None:
    for name in ipamcore.__all__:
        obj = getattr(ipamcore, name)
        if name == "__version__" or not (inspect.isclass(obj) or callable(obj)):
            continue
        assert documented(obj), name


def test_every_public_name_has_a_docstring() -> None:
    assert undocumented() == []


def test_the_version_is_written_once() -> None:
    assert ipamcore.__version__.count(".") == 2
    assert "__version__" in ipamcore.__all__
