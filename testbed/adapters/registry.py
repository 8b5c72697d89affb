"""Every adapter of the package, found by looking, not by a list kept by hand.

Each module of ``testbed/adapters`` (but this one and ``base``) may define
adapter classes; every class with a ``software`` name is registered. Adding a
piece of software is adding its module (plus its templates and its image
directory): model, plan, render, scenario, observe and the matrix read what
they need to know from here.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache
from typing import TypeVar

from .base import HostAdapter, MtaAdapter

A = TypeVar("A", bound=HostAdapter)

_NOT_ADAPTERS = {"base", "registry"}


@cache
def _registry() -> dict[str, HostAdapter]:
    package = __name__.rpartition(".")[0]
    found: list[HostAdapter] = []
    for info in sorted(pkgutil.iter_modules(importlib.import_module(package).__path__), key=lambda m: m.name):
        if info.name in _NOT_ADAPTERS or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{package}.{info.name}")
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, HostAdapter)
                and value.__module__ == module.__name__
                and value.software
            ):
                found.append(value())
    # The default of each kind first, then by module name: postfix, exim, sendmail.
    found.sort(key=lambda a: not a.default)
    return {a.software: a for a in found}


def adapter_for(software: str, role: type[A] = HostAdapter) -> A:  # type: ignore[assignment]
    """The adapter of a piece of software, checked to play ``role``."""
    adapters = _registry()
    try:
        adapter = adapters[software]
    except KeyError:
        raise KeyError(f"no adapter for {software!r}; known: {', '.join(sorted(adapters))}") from None
    if not isinstance(adapter, role):
        raise KeyError(f"{software} is not a {role.kind or role.__name__} ({adapter.kind})")
    return adapter


def mta_adapter(software: str) -> MtaAdapter:
    return adapter_for(software, MtaAdapter)


def all_adapters() -> list[HostAdapter]:
    return list(_registry().values())


def known_software() -> list[str]:
    return sorted(_registry())


def software_by_kind() -> dict[str, tuple[str, ...]]:
    """kind -> the software hosts of that kind may run; the first is the default."""
    out: dict[str, list[str]] = {}
    for adapter in _registry().values():
        out.setdefault(adapter.kind, []).append(adapter.software)
    return {kind: tuple(names) for kind, names in out.items()}


def mtas() -> list[MtaAdapter]:
    return [a for a in _registry().values() if isinstance(a, MtaAdapter)]


def self_storing() -> tuple[str, ...]:
    """MTAs that keep mailboxes themselves (the rest deliver to a mailstore)."""
    return tuple(a.software for a in mtas() if a.stores_mailboxes)


def suites() -> tuple[str, ...]:
    """The Debian suites every adapter supports."""
    adapters = _registry().values()
    named = dict.fromkeys(s for a in adapters for s in a.suites)
    return tuple(s for s in named if all(s in a.suites for a in adapters))


def images() -> tuple[str, ...]:
    """The images the adapters run in (``images/<name>/``)."""
    return tuple(dict.fromkeys(a.image for a in _registry().values()))


#: The Debian suites a lab can run on (what every adapter supports).
SUITES: tuple[str, ...] = suites()
