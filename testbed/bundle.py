"""`testbed bundle RUN_DIR`: one tar.gz of a run directory, with a README, to attach to a bug report.

The README says what was run (topology, variant, suite, the software versions
seen in the lab, the engine, the outcome) and how to read the files; it is
built from the run directory's own result.json, so a bundle can be made long
after the lab is gone, on another machine.
"""

from __future__ import annotations

import io
import json
import tarfile
import time
from pathlib import Path
from typing import Any

from .errors import TestbedError
from .resultschema import version_problem

#: What a run directory holds, in the order a reader needs it.
FILES = (
    ("report.html", "the run for a browser, in one file: the topology drawn, each message's path, the "
                    "expectations with their evidence, the timeline, links to the files below"),
    ("result.json", "the outcome: expectations with their evidence, message histories, client steps, timings, "
                    "versions, engine"),
    ("plan.json", "the lab as planned: segments, addresses, routes, DNS zones, each host's software and stack"),
    ("config/HOST/...", "every file the testbed rendered into each container (MTA configuration, net.sh, ...)"),
    ("logs/HOST/mail.log", "each MTA's own log; logs/HOST/container.log: the container's output (tb-init)"),
    ("timeline.jsonl", "steps, DNS queries, client attempts, captured connections and SMTP sessions, server "
                       "connections and MTA events in one time order"),
    ("captures/SEGMENT.pcap", "every packet of the lab's own addresses on that segment (open it in Wireshark, or "
                              "`tshark -r captures/SEGMENT.pcap -Y smtp`); captures/connections.jsonl: each TCP "
                              "connection in them once, with its SMTP commands and replies"),
    ("events.jsonl", "the MTA log lines the testbed understood, normalised (received, relayed, bounced, ...)"),
    ("connections.jsonl", "every client connection the MTAs' logs show (client address and port)"),
    ("dns-queries.jsonl", "every query the lab DNS server answered: client, name, type, answer, rule, delay"),
    ("queues/", "the MTAs' queues after the scenario"),
    ("mailboxes.json", "every mailbox's messages; bounces with their RFC 3464 fields"),
    ("sends/ID.txt", "each submission's client transcript"),
    ("clients/ID.json", "each client step: the resolver's answer in order, every connection attempt, the outcome; "
                        "clients/ID.txt: its command and output"),
)


class BundleError(TestbedError):
    """The directory is not a run directory (or cannot be read)."""


def load_result(run_dir: Path) -> dict[str, Any]:
    """RUN_DIR/result.json as written, of this testbed's schema version or older (BundleError otherwise)."""
    path = run_dir / "result.json"
    if not run_dir.is_dir():
        raise BundleError(f"{run_dir} is not a directory")
    if not path.is_file():
        raise BundleError(f"{run_dir} is not a run directory: it has no result.json (runs/ holds one per lab run)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BundleError(f"{path}: cannot be read as JSON ({exc})") from None
    if not isinstance(data, dict):
        raise BundleError(f"{path}: not a testbed result (expected a JSON object)")
    # Only the version is checked: older files lack keys added since, and readers take them as they are.
    problem = version_problem(data, str(path))
    if problem:
        raise BundleError(problem)
    return data


def readme(result: dict[str, Any], name: str) -> str:
    """The bundle's README.md, from a result.json."""
    checks = result.get("expectations") or []
    passed = sum(1 for c in checks if c.get("status") == "pass")
    applied = sum(1 for c in checks if c.get("status") != "n/a")
    if result.get("error"):
        outcome = f"lab error, not judged: {result['error']}"
    else:
        outcome = ("behaved as the topology expects" if result.get("passed") else "did NOT behave as expected") \
            + f" ({passed}/{applied} expectations hold)"
    software = ", ".join(f"{h}: {sw}" for h, sw in sorted((result.get("software") or {}).items())) or "-"
    versions = ", ".join(f"{k} {v}" for k, v in sorted((result.get("versions") or {}).items())) or "-"
    lines = [
        f"# {name}",
        "",
        f"A run of the IPv4/IPv6 mail testbed, bundled {time.strftime('%Y-%m-%d %H:%M:%S %Z')}.",
        "",
        f"- topology: `{result.get('topology')}` ({result.get('title') or 'no title'}"
        + (f"; study {result['study']}" if result.get("study") else "") + ")",
        f"- variant: `{result.get('variant')}`, run id `{result.get('run_id')}`",
        f"- Debian suite: {result.get('suite')}",
        f"- software per host: {software}",
        f"- versions seen in the lab: {versions}",
        f"- engine: {result.get('engine') or 'not recorded'}",
        f"- outcome: {outcome}",
        "",
        "## Expectations",
        "",
    ]
    marks = {"pass": "PASS", "fail": "FAIL", "n/a": "n/a"}
    for c in checks:
        lines.append(f"- {marks.get(c.get('status'), '?')} {c.get('description') or c.get('kind')}: {c.get('detail')}")
    if not checks:
        lines.append("- none judged")
    lines += ["", "## How to read it", ""]
    lines += [f"- `{path}`: {what}" for path, what in FILES]
    lines += ["", "Re-run it with `testbed run TOPOLOGY --variant VARIANT --suite SUITE` "
              "(the topology as run is in plan.json's `topology`).", ""]
    return "\n".join(lines)


def write_bundle(run_dir: Path, out: Path | None = None) -> Path:
    """run_dir -> out (default: RUN_DIR.tar.gz beside it); every file under one top directory, README.md first."""
    result = load_result(run_dir)
    name = run_dir.resolve().name
    target = out or run_dir.with_name(name + ".tar.gz")
    text = readme(result, name).encode()
    try:
        with tarfile.open(target, "w:gz") as tar:
            info = tarfile.TarInfo(f"{name}/README.md")
            info.size, info.mtime, info.mode = len(text), int(time.time()), 0o644
            tar.addfile(info, io.BytesIO(text))
            for path in sorted(run_dir.rglob("*")):
                if path.is_file() and not path.is_symlink():
                    tar.add(path, arcname=f"{name}/{path.relative_to(run_dir)}", recursive=False)
    except OSError as exc:
        raise BundleError(f"cannot write {target}: {exc.strerror or exc}") from None
    return target
