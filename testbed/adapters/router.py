"""Routers: plain Linux forwarding between segments, and radvd on advertised segments."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..templating import render
from .base import SERVICE_SCRIPT, RenderedFile, RouterAdapter

if TYPE_CHECKING:
    from ..plan import HostPlan, LabPlan


class LinuxRouter(RouterAdapter):
    software = "linux"
    image = "router"

    def files(self, host: HostPlan, plan: LabPlan) -> list[RenderedFile]:
        if not host.advertisements:
            return []
        return [RenderedFile(SERVICE_SCRIPT, render("router/service.j2", host=host), 0o755)]

    def ready_command(self, host: HostPlan) -> str | None:
        # radvd's pid file exists once it has daemonised and opened its socket.
        return "[ -s /run/testbed/radvd.pid ] && kill -0 \"$(cat /run/testbed/radvd.pid)\"" if host.advertisements else None

    def version_command(self) -> str:
        return "radvd --version 2>&1 | sed -n 's/^Version *: */radvd /p' | head -1"
