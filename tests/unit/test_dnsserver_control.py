"""The control socket and the ctl client (in-process and as commands)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from dnsserver_support import config_dict, query, rcode

from testbed.dnsserver import ctl
from testbed.dnsserver.config import parse_config
from testbed.dnsserver.control import ControlServer
from testbed.dnsserver.server import LabDNSServer

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def lab() -> Iterator[tuple[LabDNSServer, str]]:
    # Unix socket paths are limited to ~107 bytes; pytest's tmp_path can exceed that.
    d = tempfile.mkdtemp(prefix="tbdns-")
    path = os.path.join(d, "ctl.sock")
    srv = LabDNSServer(parse_config(config_dict())).start()
    control = ControlServer(path, srv)
    control.start()
    yield srv, path
    control.stop()
    srv.stop()
    os.rmdir(d)


SLOW = [{"name": "slow", "match": {"name": "mx10.brainbird.nl."}, "action": {"rcode": "SERVFAIL"}}]


def test_functions(lab: tuple[LabDNSServer, str]) -> None:
    srv, path = lab
    assert ctl.list_rules(path) == {"ok": True, "rules": []}
    resp = ctl.set_rules(path, SLOW)
    assert resp["ok"] and [r["name"] for r in resp["rules"]] == ["slow"]
    assert rcode(query(srv.port, "mx10.brainbird.nl.")) == "SERVFAIL"
    resp = ctl.add_rules(path, [{"preset": "aaaa-late", "match": {"name": "mx30.brainbird.nl."}}])
    assert [r["name"] for r in resp["rules"]] == ["slow", "aaaa-late"]
    assert ctl.list_rules(path)["rules"][0]["hits"] == 1
    resp = ctl.set_rules(path, [{"match": {"client": "300.1.1.1"}, "action": {"drop": True}}])
    assert resp == {"ok": False, "errors": [{"path": "rules[0].match.client",
                                             "message": "'300.1.1.1' is not an address, a prefix, ipv4 or ipv6"}]}
    assert [r["name"] for r in ctl.list_rules(path)["rules"]] == ["slow", "aaaa-late"]
    assert ctl.clear_rules(path) == {"ok": True, "rules": []}
    assert rcode(query(srv.port, "mx10.brainbird.nl.")) == "NOERROR"


def test_protocol_errors(lab: tuple[LabDNSServer, str]) -> None:
    _srv, path = lab
    assert ctl.request(path, {"op": "frobnicate"})["errors"][0]["path"] == "op"
    assert ctl.request(path, {"op": "set"})["errors"][0]["path"] == "rules"
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(path)
        s.sendall(b"not json\n[]\n{\"op\": \"list\"}\n")
        f = s.makefile()
        r1, r2, r3 = (json.loads(f.readline()) for _ in range(3))
    assert not r1["ok"] and "not valid JSON" in r1["errors"][0]["message"]
    assert not r2["ok"] and r3 == {"ok": True, "rules": []}
    with pytest.raises(ctl.ControlError, match="cannot talk to"):
        ctl.list_rules(path + ".missing")


def run_ctl(path: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "testbed.dnsserver.ctl", "--control", path, *args],
                          cwd=REPO, input=stdin, capture_output=True, text=True, timeout=20)


def test_ctl_command(lab: tuple[LabDNSServer, str], tmp_path: Path) -> None:
    srv, path = lab
    f = tmp_path / "rules.json"
    f.write_text(json.dumps({"rules": SLOW}))
    res = run_ctl(path, "set", str(f))
    assert res.returncode == 0 and "1 rule(s) active: slow" in res.stdout
    res = run_ctl(path, "add", "-", stdin=json.dumps([{"preset": "empty-a-first",
                                                        "match": {"name": "mail.skimbee.net."}}]))
    assert res.returncode == 0, res.stderr
    res = run_ctl(path, "list")
    names = [r["name"] for r in json.loads(res.stdout)]
    assert names == ["slow", "empty-a-first/a", "empty-a-first/aaaa"]
    res = run_ctl(path, "set", "-", stdin='[{"match": {"type": "AAAAA"}, "action": {"delay": 5}}]')
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert res.stderr.splitlines() == [
        "testbed-dns-ctl: rules[0].match.type: 'AAAAA' is not a DNS query type (A, AAAA, MX, ...)",
        "testbed-dns-ctl: rules[0].action.delay: unknown key (allowed: delay_ms, drop, order, "
        "rcode, truncate, ttl)"]
    assert len(srv.list_rules()) == 3                     # unchanged
    res = run_ctl(path, "set", "-", stdin="{nope")
    assert res.returncode == 2 and "not valid JSON" in res.stderr
    res = run_ctl(path, "set", str(tmp_path / "missing.json"))
    assert res.returncode == 2 and "cannot read" in res.stderr
    res = run_ctl(path, "clear")
    assert res.returncode == 0 and srv.list_rules() == []
    res = run_ctl(path + ".missing", "list")
    assert res.returncode == 2 and "cannot talk to" in res.stderr


def test_ctl_reads_yaml_when_available(lab: tuple[LabDNSServer, str]) -> None:
    pytest.importorskip("yaml")
    _srv, path = lab
    text = "- preset: aaaa-late\n  match: {name: mx10.brainbird.nl.}\n  delay_ms: 250\n"
    res = run_ctl(path, "set", "-", stdin=text)
    assert res.returncode == 0, res.stderr
    assert ctl.list_rules(path)["rules"][0]["action"] == {"delay_ms": 250}


def test_main_with_control_socket(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = tmp_path / "dns.json"
    cfg.write_text(json.dumps(config_dict(listen=["127.0.0.1"], port=port, rules=SLOW)))
    d = tempfile.mkdtemp(prefix="tbdns-")
    sock = os.path.join(d, "c.sock")
    proc = subprocess.Popen([sys.executable, "-m", "testbed.dnsserver", "--config", str(cfg),
                             "--control", sock], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith(f"testbed-dns: listening on 127.0.0.1:{port}/udp+tcp, control {sock}")
        assert rcode(query(port, "mx10.brainbird.nl.")) == "SERVFAIL"
        assert run_ctl(sock, "clear").returncode == 0
        assert rcode(query(port, "mx10.brainbird.nl.")) == "NOERROR"
    finally:
        proc.terminate()
        proc.wait(10)
    assert not os.path.exists(sock)
    os.rmdir(d)
