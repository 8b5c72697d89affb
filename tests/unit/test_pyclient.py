"""tb-pyclient and the adapters python and outlook-model, on RECORDED REAL output.

The recordings (tests/data/clients/python/) are tb-pyclient's own output in a
real lab, talking to real Postfix and Dovecot; see the README there.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from testbed.adapters.base import ClientAdapter, ClientRequest
from testbed.adapters.registry import adapter_for
from testbed.clientprogs import pyclient

DATA = Path(__file__).resolve().parents[1] / "data" / "clients" / "python" / "bookworm"


def recorded(case: str) -> dict:
    return json.loads((DATA / f"{case}.json").read_text())


def outcome_of(software: str, case: str):
    rec = recorded(case)
    return adapter_for(software, ClientAdapter).outcome(rec["rc"], rec["stdout"], rec["stderr"])


REAL = "python"
MODEL = "outlook-model"


@pytest.mark.parametrize(("software", "case", "ok", "reply", "detail"), [
    (REAL, "submit-ok", True, "250 2.0.0 Ok: queued as 6CDA3BA0D2", "connected to 2001:db8:1::30"),
    (REAL, "submit-relay-denied", False, "554 5.7.1 <someone@example.org>: Relay access denied",
     "connected to 2001:db8:1::30"),
    (REAL, "refused-v6-submit", True, "250 2.0.0 Ok: queued as 31990BA236", "connected to 198.18.1.30"),
    (REAL, "blackhole-v6-connect", True, "220 mx30.brainbird.nl ESMTP", "connected to 198.18.1.30"),
    (REAL, "connect-smtp-ipv6-only", True, "220 mx20.brainbird.nl ESMTP", "connected to 2001:db8:2::20"),
    (REAL, "connect-imap", True, "* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ "
     "AUTH=PLAIN AUTH=LOGIN] Dovecot (Debian) ready.", "connected to 2001:db8:1::110"),
    (REAL, "fetch-imap-ok", True, "OK Logged in", "3 message(s)"),
    (REAL, "fetch-imap-bad-password", False, "NO [AUTHENTICATIONFAILED] Authentication failed.", "connected"),
    (REAL, "fetch-pop3-ok", True, "+OK Logged in.", "3 message(s)"),
    (REAL, "fetch-pop3-bad-password", False, "-ERR [AUTH] Authentication failed.", "connected"),
    (REAL, "unknown-name", False, "gaierror: [Errno -2] Name or service not known", "not connected"),
    (MODEL, "refused-v6-submit-first-only", False, "ConnectionRefusedError: [Errno 111] Connection refused",
     "tried only 2001:db8:1::30 of 2001:db8:1::30, 198.18.1.30"),
    (MODEL, "blackhole-v6-connect-first-only", False, "TimeoutError: timed out", "tried only 2001:db8:1::30"),
    (MODEL, "connect-pop3-first-only", True, "+OK Dovecot (Debian) ready.", "connected to 2001:db8:1::110"),
    (MODEL, "fetch-imap-first-only", True, "OK Logged in", "4 message(s)"),
])
def test_outcome_on_recorded_runs(software: str, case: str, ok: bool, reply: str, detail: str) -> None:
    out = outcome_of(software, case)
    assert (out.ok, out.reply) == (ok, reply)
    assert detail in out.detail


def test_the_fallback_difference_in_the_same_lab_state() -> None:
    # IPv6 refused, IPv4 listening: the real stdlib client falls back, the model does not ...
    real = json.loads(recorded("refused-v6-submit")["stdout"].splitlines()[-1].split(": ", 1)[1])
    model = json.loads(recorded("refused-v6-submit-first-only")["stdout"].splitlines()[-1].split(": ", 1)[1])
    assert real["ok"] and real["connected_to"] == "198.18.1.30" and real["mode"] == "sequential"
    assert not model["ok"] and model["connected_to"] is None and model["attempted"] == model["resolved"][0]
    assert model["mode"] == "first-address-only" and "behaviour model" in model["model"]
    # ... and bookworm's swaks (real software) fails the same way as the model.
    swaks = recorded("refused-v6-swaks")
    assert swaks["rc"] != 0 and "IO::Socket::INET6: connect: Connection refused" in swaks["stdout"] + swaks["stderr"]


def test_result_line_is_the_last_line_of_every_recording() -> None:
    for path in sorted(DATA.glob("*.json")):
        rec = json.loads(path.read_text())
        if not rec["command"].startswith("tb-pyclient"):
            continue
        last = rec["stdout"].splitlines()[-1]
        assert last.startswith(pyclient.RESULT_PREFIX), path.name
        argv = shlex.split(rec["command"])
        if "--password" in argv:  # masked in the transcript
            assert f" {argv[argv.index('--password') + 1]}" not in rec["stdout"], path.name


def test_outcome_without_a_result_line() -> None:
    adapter = adapter_for("python", ClientAdapter)
    out = adapter.outcome(127, "", "sh: 1: tb-pyclient: not found\n")
    assert not out.ok and out.reply == "sh: 1: tb-pyclient: not found" and out.detail == "exit status 127"
    assert adapter.outcome(1, "tb-pyclient-result: {bad json\n", "").reply == "tb-pyclient printed no result (exit status 1)"


SUBMIT = ClientRequest("submit", "smtp", "mx30.brainbird.nl", 25, 10.0, sender="user@skimbee.net",
                       recipients=("user@brainbird.nl",), message_id="<rec-submit-ok@client.skimbee.net>",
                       subject="recorded", helo="client.skimbee.net")


def test_client_command_is_the_recorded_one() -> None:
    rec = recorded("submit-ok")
    python = adapter_for("python", ClientAdapter)
    args = shlex.split(python.client_command(SUBMIT))
    assert sorted(args) == sorted(shlex.split(rec["command"]))
    model = adapter_for("outlook-model", ClientAdapter)
    rec = recorded("refused-v6-submit-first-only")
    req = ClientRequest("submit", "smtp", "mx30.brainbird.nl", 25, 10.0, sender="user@skimbee.net",
                        recipients=("user@brainbird.nl",), message_id="<rec-refused-v6-first@client.skimbee.net>",
                        subject="recorded", helo="client.skimbee.net")
    assert sorted(shlex.split(model.client_command(req))) == sorted(shlex.split(rec["command"]))
    fetch = ClientRequest("fetch", "imap", "imap.brainbird.nl", 143, 10.0, user="user@brainbird.nl",
                          password="wrong")
    assert sorted(shlex.split(python.client_command(fetch))) == sorted(
        shlex.split(recorded("fetch-imap-bad-password")["command"]))


def test_client_command_checks_the_request() -> None:
    python = adapter_for("python", ClientAdapter)
    with pytest.raises(ValueError, match="no address-family option"):
        python.client_command(ClientRequest("connect", "smtp", "mx30.brainbird.nl", 25, 5.0, family="ipv4"))
    with pytest.raises(ValueError, match="SMTP only"):
        python.client_command(ClientRequest("submit", "imap", "x", 143, 5.0))
    with pytest.raises(ValueError, match="IMAP or POP3"):
        python.client_command(ClientRequest("fetch", "smtp", "x", 25, 5.0))
    two = python.client_command(ClientRequest("submit", "smtp", "x", 25, 5.0, sender="a@b", recipients=("c@d", "e@f"),
                                              message_id="<m@x>", helo="h"))
    assert shlex.split(two).count("--to") == 2


def test_adapter_attributes_and_labels() -> None:
    python = adapter_for("python", ClientAdapter)
    model = adapter_for("outlook-model", ClientAdapter)
    for a in (python, model):
        assert a.kind == "client" and a.image == "client"
        assert a.actions == {"submit", "fetch", "connect"} and a.protocols == {"smtp", "imap", "pop3"}
    assert python.model_of is None and python.model_source is None
    assert python.version_command() == "python3 --version"
    assert model.model_of == "Outlook 2007/2010: connects to the first address only, no IPv4 fallback"
    assert "slide 23" in (model.model_source or "")
    assert "behaviour model" in (model.version_command() or "")
    assert "--first-address-only" in shlex.split(model.client_command(SUBMIT))
    assert "--first-address-only" not in shlex.split(python.client_command(SUBMIT))


def test_send_step_interface() -> None:
    python = adapter_for("python", ClientAdapter)
    cmd = python.send_command(server="mx30.brainbird.nl", sender="user@skimbee.net", recipients=["user@brainbird.nl"],
                              message_id="<rec-submit-ok@client.skimbee.net>", subject="recorded",
                              helo="client.skimbee.net", timeout_s=10)
    assert sorted(shlex.split(cmd)) == sorted(shlex.split(recorded("submit-ok")["command"]))
    assert python.last_reply(recorded("submit-ok")["stdout"]) == "250 2.0.0 Ok: queued as 6CDA3BA0D2"
    assert python.last_reply(recorded("refused-v6-submit-first-only")["stdout"]) is None
    assert python.last_reply(recorded("submit-relay-denied")["stdout"]) == (
        "554 5.7.1 <someone@example.org>: Relay access denied")


@pytest.mark.parametrize("argv", [
    ["--action", "submit", "--protocol", "imap", "--server", "x", "--port", "1", "--timeout", "1"],
    ["--action", "fetch", "--protocol", "smtp", "--server", "x", "--port", "1", "--timeout", "1"],
    ["--action", "submit", "--protocol", "smtp", "--server", "x", "--port", "1", "--timeout", "1"],
    ["--action", "fetch", "--protocol", "imap", "--server", "x", "--port", "1", "--timeout", "1"],
    ["--action", "connect", "--protocol", "smtp", "--server", "x", "--port", "1", "--timeout", "0"],
])
def test_bad_arguments_exit_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as e:
        pyclient.main(argv)
    assert e.value.code == 2
