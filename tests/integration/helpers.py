"""Small readers shared by the integration tests."""

from __future__ import annotations

import json


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
