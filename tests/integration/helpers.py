"""Small readers shared by the integration tests."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from testbed import fabric


def dns_queries(lab, client: str | None = None) -> list[dict]:
    text = lab.host("dns").file("/var/log/testbed/dns-queries.jsonl").content_string
    queries = [json.loads(line) for line in text.splitlines() if line.strip()]
    if client:
        addrs = {str(a) for a in lab.plan.hosts[client].addresses()}
        queries = [q for q in queries if q["client"] in addrs]
    return queries


def mailbox(lab, address: str) -> list[str]:
    """Every message in a user's INBOX, read with doveadm inside the domain's Dovecot."""
    domain = address.split("@", 1)[1]
    store = lab.host(lab.plan.topology.domains[domain].mailstore)
    count = store.check_output("doveadm mailbox status -u %s messages INBOX", address)
    assert count.startswith("INBOX messages="), count
    texts = []
    for uid in store.check_output("doveadm search -u %s mailbox INBOX ALL", address).split("\n"):
        if uid.strip():
            uid = uid.split()[1]
            texts.append(store.check_output("doveadm fetch -u %s text mailbox INBOX uid %s", address, uid))
    assert len(texts) == int(count.rsplit("=", 1)[1])
    return texts


def mail_log(lab, host: str) -> str:
    return lab.mail_log(host)


def explain(result) -> str:
    lines = [f"{result.label}: error={result.error}"]
    lines += [f"  {c.status}: {c.description}: {c.detail}" for c in result.checks]
    return "\n".join(lines)


# --- the testbed command, as a user runs it ------------------------------------------------

TESTBED = [sys.executable, "-m", "testbed.cli"]


def run_testbed(*args: str, cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TESTBED, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)


@contextmanager
def labs_up(docker_client, cwd: Path, *args: str) -> Iterator[list[dict]]:
    """`testbed up ARGS --json`: the labs it printed, removed again on every exit path."""
    proc = run_testbed("up", *args, "--json", cwd=cwd)
    labs = json.loads(proc.stdout) if proc.returncode == 0 else []
    try:
        assert proc.returncode == 0, proc.stdout + proc.stderr
        yield labs
    finally:
        for lab in labs:
            fabric.teardown(docker_client, lab["run_id"])
