"""Routers: plain Linux forwarding between segments; nothing to configure beyond the network."""

from __future__ import annotations

from .base import HostAdapter


class RouterAdapter(HostAdapter):
    software = "linux"
    kind = "router"
