"""The control channel: change rules in a running server without a restart.

A Unix socket speaking JSON lines: one request object per line, one response
object per line. Requests::

    {"op": "list"}
    {"op": "set",   "rules": [...]}   replace all rules (all-or-nothing)
    {"op": "add",   "rules": [...]}   append rules
    {"op": "clear"}

Responses are ``{"ok": true, "rules": [...active rules...]}`` or
``{"ok": false, "errors": [{"path": ..., "message": ...}, ...]}``; a rejected
``set``/``add`` leaves the active rules untouched.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import sys
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .server import LabDNSServer

MAX_REQUEST = 1 << 20          # 1 MiB of rules is far beyond any topology
CLIENT_TIMEOUT_S = 5.0


def handle_request(server: "LabDNSServer", req: Any) -> dict[str, Any]:
    """Apply one control request; the socket and in-process callers share this."""
    if not isinstance(req, dict) or not isinstance(req.get("op"), str):
        return _fail("", 'request must be an object with "op"')
    op = req["op"]
    if op in ("set", "add"):
        if "rules" not in req:
            return _fail("rules", f"{op} needs a rules list")
        errors = (server.set_rules if op == "set" else server.add_rules)(req["rules"])
        if errors:
            return {"ok": False, "errors": [e.to_dict() for e in errors]}
        _announce(server, op)
    elif op == "clear":
        server.clear_rules()
        _announce(server, op)
    elif op != "list":
        return _fail("op", f"unknown op {op!r} (list, set, add, clear)")
    return {"ok": True, "rules": server.list_rules()}


def _fail(path: str, message: str) -> dict[str, Any]:
    return {"ok": False, "errors": [{"path": path, "message": message}]}


def _announce(server: "LabDNSServer", op: str) -> None:
    # Goes to the container's stdout, next to the query log as evidence of
    # when the fault set changed during a scenario.
    names = ", ".join(r["name"] for r in server.list_rules()) or "(none)"
    print(f"testbed-dns: rules {op}: {names}", flush=True)


class ControlServer:
    def __init__(self, path: str, server: "LabDNSServer") -> None:
        self.path, self.server = path, server
        self._stop = threading.Event()
        self.sock = self._bind(path)
        self.thread = threading.Thread(target=self._run, name="dns-control", daemon=True)

    @staticmethod
    def _bind(path: str) -> socket.socket:
        # A socket file left by a previous run would make bind() fail.
        try:
            if stat.S_ISSOCK(os.stat(path).st_mode):
                os.unlink(path)
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(path)
            os.chmod(path, 0o600)
            sock.listen(8)
            sock.settimeout(0.2)
        except BaseException:
            sock.close()
            raise
        return sock

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(2)
        self.sock.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass

    def _run(self) -> None:
        # One client at a time: control traffic is a handful of requests per
        # scenario, and serial handling keeps rule changes strictly ordered.
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                continue
            try:
                self._serve(conn)
            except Exception as e:
                print(f"testbed-dns: control connection: {type(e).__name__}: {e}",
                      file=sys.stderr, flush=True)
            finally:
                conn.close()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(CLIENT_TIMEOUT_S)
        buf = b""
        while not self._stop.is_set():
            try:
                chunk = conn.recv(65536)
            except (socket.timeout, OSError):
                return
            if not chunk:
                return
            buf += chunk
            if len(buf) > MAX_REQUEST and b"\n" not in buf:
                conn.sendall(_line(_fail("", f"request longer than {MAX_REQUEST} bytes")))
                return
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                if not line.strip():
                    continue
                try:
                    req = json.loads(line)
                except (ValueError, UnicodeDecodeError) as e:
                    resp = _fail("", f"request is not valid JSON: {e}")
                else:
                    resp = handle_request(self.server, req)
                conn.sendall(_line(resp))


def _line(obj: dict[str, Any]) -> bytes:
    return (json.dumps(obj) + "\n").encode()
