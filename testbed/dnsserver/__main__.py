"""``python3 -m testbed.dnsserver --config FILE --query-log FILE [--control SOCK]``."""

from __future__ import annotations

import argparse
import gc
import os
import signal
import sys
import threading

from .config import load_config
from .control import ControlServer
from .errors import ConfigError
from .server import BindError, LabDNSServer

PROG = "testbed-dns"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m testbed.dnsserver",
                                 description="The testbed's authoritative DNS server.")
    ap.add_argument("--config", required=True, help="JSON config (listen, port, zones, rules)")
    ap.add_argument("--query-log", help="append one JSON line per query to this file")
    ap.add_argument("--control", help="Unix socket for changing rules at run time (see ctl)")
    ap.add_argument("--port", type=int, help="override the config's port")
    args = ap.parse_args(argv)

    try:
        config = load_config(args.config)
    except ConfigError as e:
        for p in e.problems:
            print(f"{PROG}: {args.config}: {p}", file=sys.stderr)
        return 2
    if args.port is not None:
        config.port = args.port

    if args.query_log:
        try:
            os.makedirs(os.path.dirname(os.path.abspath(args.query_log)), exist_ok=True)
            open(args.query_log, "a").close()
        except OSError as e:
            print(f"{PROG}: cannot write query log {args.query_log}: {e.strerror or e}",
                  file=sys.stderr)
            return 2

    # The GIL hand-off interval (default 5 ms) bounds how late the scheduler
    # thread can wake while a receive thread is busy; 0.25 ms keeps delays
    # within the accuracy target with hundreds of queries in flight.
    sys.setswitchinterval(0.00025)
    # Zones and rules live for the whole run: keep them out of the collector's
    # full passes so a collection cannot stall a due reply.
    gc.freeze()
    server = LabDNSServer(config, args.query_log)
    try:
        server.start()
    except BindError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        server.stop()
        return 1
    control = None
    if args.control:
        try:
            control = ControlServer(args.control, server)
        except OSError as e:
            print(f"{PROG}: cannot create control socket {args.control}: {e.strerror or e}",
                  file=sys.stderr)
            server.stop()
            return 1
        control.start()

    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    extra = f", control {args.control}" if args.control else ""
    rules = f", {len(config.rules)} rule(s)" if config.rules else ""
    print(f"{PROG}: {server.describe()}{extra}{rules}", flush=True)
    while not done.wait(1.0):
        pass
    if control:
        control.stop()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
