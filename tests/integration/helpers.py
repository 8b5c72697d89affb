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


def maildir(lab, host: str, domain: str, user: str) -> list[str]:
    """Contents of every message in a Postfix virtual Maildir."""
    h = lab.host(host)
    listing = h.run(f"ls /var/mail/vhosts/{domain}/{user}/new/ 2>/dev/null").stdout.split()
    return [h.file(f"/var/mail/vhosts/{domain}/{user}/new/{name}").content_string for name in listing]


def mail_log(lab, host: str) -> str:
    return lab.host(host).file("/var/log/testbed/mail.log").content_string


def explain(result) -> str:
    lines = [f"{result.label}: error={result.error}"]
    lines += [f"  {c.status}: {c.description}: {c.detail}" for c in result.checks]
    return "\n".join(lines)
