#!/usr/bin/python3
"""tb-resolve-cares: resolve a name with c-ares's ares_getaddrinfo and print the addresses in c-ares's order.

    tb-resolve-cares NAME [--family any|ipv4|ipv6] [--timeout S]

Real software, not a model: c-ares (Debian's libc-ares2, through python3-pycares)
queries the lab DNS server named in /etc/resolv.conf and sorts the answer by
RFC 6724's destination address selection (``ares__sortaddrinfo``, c-ares 1.16
and later: RFC 6724's precedence and label tables, rule 9 for IPv6 only and up
to the source's prefix length), using the source address the kernel would
pick for each destination. That is the comparison the study's slides 7-8 ask
for: the same lab, the same answers, glibc's RFC 3484 table against RFC 6724.

tb-trace runs it before the client and hands the client these addresses
through its getaddrinfo shim, so the client itself connects as it always does.

Prints one JSON object: {"resolver": "c-ares", "library": "...", "name": NAME,
"addresses": [...], "error": null | "EAI_NONAME" | ..., "dur_ms": MS}.
Exit 0 with addresses, 2 when c-ares found none (an answer, not a failure),
1 on a usage or library error.
"""

from __future__ import annotations

import argparse
import json
import select
import socket
import sys
import time

FAMILIES = {"any": socket.AF_UNSPEC, "ipv4": socket.AF_INET, "ipv6": socket.AF_INET6}

#: c-ares status -> the getaddrinfo error a caller would see (ares_getaddrinfo's own mapping is to ARES_*).
_ERRORS = {"ARES_ENOTFOUND": "EAI_NONAME", "ARES_ENODATA": "EAI_NODATA", "ARES_ETIMEOUT": "EAI_AGAIN",
           "ARES_ESERVFAIL": "EAI_AGAIN", "ARES_ECONNREFUSED": "EAI_AGAIN", "ARES_EREFUSED": "EAI_FAIL"}


def resolve(name: str, family: str, timeout_s: float) -> dict:
    import pycares  # python3-pycares: only in the client image

    channel = pycares.Channel(timeout=timeout_s, tries=1)
    outcome: dict = {}

    def done(result, error) -> None:  # noqa: ANN001 - pycares' callback
        outcome["result"], outcome["error"] = result, error

    started = time.monotonic()
    channel.getaddrinfo(name, None, done, family=FAMILIES[family], type=socket.SOCK_STREAM)
    deadline = started + timeout_s + 1.0
    while "result" not in outcome and time.monotonic() < deadline:
        reads, writes = channel.getsock()
        if not reads and not writes:
            break
        wait = channel.timeout(0.1) or 0.1
        r, w, _ = select.select(reads, writes, [], wait)
        for fd in r:
            channel.process_fd(fd, pycares.ARES_SOCKET_BAD)
        for fd in w:
            channel.process_fd(pycares.ARES_SOCKET_BAD, fd)
        if not r and not w:
            channel.process_fd(pycares.ARES_SOCKET_BAD, pycares.ARES_SOCKET_BAD)
    dur_ms = (time.monotonic() - started) * 1e3
    addresses: list[str] = []
    error = None
    if "result" not in outcome:
        error = "EAI_AGAIN"
    elif outcome["error"] is not None:
        code = pycares.errno.errorcode.get(outcome["error"], str(outcome["error"]))
        error = _ERRORS.get(code, code)
    else:
        for node in outcome["result"].nodes:
            addr = node.addr[0]
            addr = addr.decode() if isinstance(addr, bytes) else addr
            if addr not in addresses:
                addresses.append(addr)
        if not addresses:
            error = "EAI_NONAME"
    return {
        "resolver": "c-ares",
        "library": f"c-ares {pycares.ARES_VERSION} (pycares {pycares.__version__})",
        "sorting": "RFC 6724 (ares__sortaddrinfo)",
        "name": name,
        "family": family,
        "addresses": addresses,
        "error": error,
        "dur_ms": round(dur_ms, 3),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="tb-resolve-cares",
                                 description="Resolve NAME with c-ares (RFC 6724 sorting); print one JSON object.")
    ap.add_argument("name")
    ap.add_argument("--family", choices=sorted(FAMILIES), default="any")
    ap.add_argument("--timeout", type=float, default=5.0, help="seconds (default 5)")
    args = ap.parse_args(argv)
    if not args.timeout > 0:
        ap.error("--timeout must be positive")
    try:
        result = resolve(args.name, args.family, args.timeout)
    except (ImportError, OSError) as exc:
        print(f"tb-resolve-cares: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0 if result["addresses"] else 2


if __name__ == "__main__":
    sys.exit(main())
