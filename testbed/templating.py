"""The Jinja2 environment shared by the renderer and the adapters (text in, text out)."""

from __future__ import annotations

import ipaddress
from functools import cache
from typing import Any

import jinja2


def _bracket_net(net: Any) -> str:
    """Postfix/Exim style network: IPv6 in brackets ([2001:db8::]/64)."""
    net = ipaddress.ip_network(str(net))
    if net.version == 6:
        return f"[{net.network_address}]/{net.prefixlen}"
    return str(net)


def _seconds(value: float) -> str:
    return f"{max(1, round(value))}s"


@cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("testbed", "templates"),
        undefined=jinja2.StrictUndefined,  # a typo in a template fails loudly
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    env.filters["bracket_net"] = _bracket_net
    env.filters["seconds"] = _seconds
    return env


def render(template: str, **context: Any) -> str:
    return environment().get_template(template).render(**context)
