"""Routers: plain Linux forwarding between segments; nothing to configure beyond the network."""

from __future__ import annotations

from .base import RouterAdapter


class LinuxRouter(RouterAdapter):
    software = "linux"
    image = "base"
