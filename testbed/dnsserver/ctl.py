"""Client for the control socket of a running server.

    python3 -m testbed.dnsserver.ctl --control PATH list
    python3 -m testbed.dnsserver.ctl --control PATH set FILE|-
    python3 -m testbed.dnsserver.ctl --control PATH add FILE|-
    python3 -m testbed.dnsserver.ctl --control PATH clear

FILE holds a JSON list of rules (or {"rules": [...]}); YAML is accepted too
when PyYAML is installed. Exit status: 0 done, 1 rules rejected (one line per
problem on stderr, nothing changed), 2 usage, file or connection problem.
The same operations are available as functions for in-process callers.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
from typing import Any

PROG = "testbed-dns-ctl"


class ControlError(Exception):
    """The control socket could not be reached or answered nonsense."""


def request(path: str, payload: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
    """Send one request to the control socket at ``path``; return the response."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(path)
            s.sendall((json.dumps(payload) + "\n").encode())
            buf = b""
            while b"\n" not in buf:
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
    except OSError as e:
        raise ControlError(f"cannot talk to {path}: {e.strerror or e}") from None
    try:
        resp = json.loads(buf.split(b"\n", 1)[0])
    except ValueError:
        raise ControlError(f"bad response from {path}: {buf[:200]!r}") from None
    if not isinstance(resp, dict):
        raise ControlError(f"bad response from {path}: {resp!r}")
    return resp


def list_rules(path: str) -> dict[str, Any]:
    return request(path, {"op": "list"})


def set_rules(path: str, rules: Any) -> dict[str, Any]:
    return request(path, {"op": "set", "rules": rules})


def add_rules(path: str, rules: Any) -> dict[str, Any]:
    return request(path, {"op": "add", "rules": rules})


def clear_rules(path: str) -> dict[str, Any]:
    return request(path, {"op": "clear"})


def load_rules_text(text: str, source: str) -> Any:
    """Parse rules from JSON, or YAML if PyYAML is available (it is not in the image)."""
    try:
        data = json.loads(text)
    except ValueError as json_err:
        try:
            import yaml
        except ImportError:
            raise ValueError(f"{source}: not valid JSON: {json_err}") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ValueError(f"{source}: not valid JSON or YAML: {str(e).splitlines()[0]}") from None
    if isinstance(data, dict) and "rules" in data:
        data = data["rules"]
    return data


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m testbed.dnsserver.ctl",
                                 description="Change the rules of a running testbed DNS server.")
    ap.add_argument("--control", required=True, help="the server's control socket")
    sub = ap.add_subparsers(dest="op", required=True)
    sub.add_parser("list", help="print the active rules as JSON")
    for op, what in (("set", "replace all rules"), ("add", "append rules")):
        p = sub.add_parser(op, help=what)
        p.add_argument("file", help="JSON (or YAML) rules file, - for stdin")
    sub.add_parser("clear", help="remove every rule")
    args = ap.parse_args(argv)

    payload: dict[str, Any] = {"op": args.op}
    if args.op in ("set", "add"):
        try:
            if args.file == "-":
                text, source = sys.stdin.read(), "<stdin>"
            else:
                with open(args.file, encoding="utf-8") as f:
                    text, source = f.read(), args.file
            payload["rules"] = load_rules_text(text, source)
        except OSError as e:
            print(f"{PROG}: cannot read {args.file}: {e.strerror or e}", file=sys.stderr)
            return 2
        except ValueError as e:
            print(f"{PROG}: {e}", file=sys.stderr)
            return 2
    try:
        resp = request(args.control, payload)
    except ControlError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 2
    if not resp.get("ok"):
        for err in resp.get("errors", []):
            where = f"{err.get('path')}: " if err.get("path") else ""
            print(f"{PROG}: {where}{err.get('message')}", file=sys.stderr)
        return 1
    if args.op == "list":
        print(json.dumps(resp.get("rules", []), indent=2))
    else:
        rules = resp.get("rules", [])
        print(f"{PROG}: {args.op}: {len(rules)} rule(s) active"
              + (": " + ", ".join(r["name"] for r in rules) if rules else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
