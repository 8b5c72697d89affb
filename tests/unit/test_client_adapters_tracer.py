"""The real clients' adapters (swaks, curl, msmtp): command lines, and outcomes of recorded real runs.

Every transcript comes from tests/data/clients/<software>/ (tb-trace output of
a real run; the README beside it says how it was recorded).
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from testbed.adapters import ClientAdapter, ClientRequest, adapter_for, software_by_kind

DATA = Path(__file__).resolve().parents[1] / "data" / "clients"


def recorded(path: str) -> tuple[int, str, str]:
    d = json.loads((DATA / path).read_text())
    return d["rc"], d["stdout"], d["stderr"]


def client(software: str) -> ClientAdapter:
    return adapter_for(software, ClientAdapter)


SUBMIT = ClientRequest("submit", "smtp", "mx30.brainbird.nl", 25, 5, sender="tester@skimbee.net",
                       recipients=("user@brainbird.nl",), message_id="<m1@client.skimbee.net>",
                       subject="recorded", helo="client.skimbee.net")


def test_the_clients_and_what_they_do() -> None:
    assert software_by_kind()["client"][0] == "swaks"  # the default client stays swaks
    assert {"swaks", "curl", "msmtp"} <= set(software_by_kind()["client"])
    assert (client("swaks").actions, client("swaks").protocols) == ({"submit", "connect"}, {"smtp"})
    assert (client("curl").actions, client("curl").protocols) == (
        {"submit", "fetch", "connect"}, {"smtp", "imap", "pop3"})
    assert (client("msmtp").actions, client("msmtp").protocols) == ({"submit"}, {"smtp"})
    for software in ("swaks", "curl", "msmtp"):
        adapter = client(software)
        assert adapter.image == "client" and adapter.model_of is None
        assert adapter.version_command().startswith(f"{software} --version")


def test_swaks_command_line() -> None:
    words = shlex.split(client("swaks").client_command(SUBMIT))
    assert words[:7] == ["swaks", "--server", "mx30.brainbird.nl", "--port", "25", "--timeout", "5s"]
    assert "Message-Id: <m1@client.skimbee.net>" in words and "-4" not in words and "-6" not in words
    connect = ClientRequest("connect", "smtp", "mx", 587, 2.5, family="ipv6")
    assert shlex.split(client("swaks").client_command(connect)) == [
        "swaks", "--server", "mx", "--port", "587", "--timeout", "3s", "-6", "--quit-after", "connect"]


def test_curl_command_lines() -> None:
    curl = client("curl")
    submit = curl.client_command(ClientRequest(**{**SUBMIT.__dict__, "family": "ipv4", "timeout_s": 1.5}))
    feed, _, command = submit.partition(" | ")
    assert "Message-Id: <m1@client.skimbee.net>" in shlex.split(feed)[2]
    assert shlex.split(command) == [
        "curl", "-v", "-sS", "--connect-timeout", "1.5", "-4", "--mail-from", "tester@skimbee.net",
        "--mail-rcpt", "user@brainbird.nl", "--upload-file", "-", "smtp://mx30.brainbird.nl:25/client.skimbee.net"]
    imap = ClientRequest("fetch", "imap", "imap.brainbird.nl", 143, 5, user="u@b", password="pw")
    assert shlex.split(curl.client_command(imap))[-3:] == ["--user", "u@b:pw", "imap://imap.brainbird.nl:143/INBOX"]
    pop3 = ClientRequest("fetch", "pop3", "imap.brainbird.nl", 110, 5, family="ipv6")
    assert shlex.split(curl.client_command(pop3))[-2:] == ["-6", "pop3://imap.brainbird.nl:110/"]
    connect = ClientRequest("connect", "smtp", "mx", 25, 5)
    assert shlex.split(curl.client_command(connect))[-3:] == ["--request", "NOOP", "smtp://mx:25/"]
    with pytest.raises(ValueError, match="fetches over imap or pop3"):
        curl.client_command(ClientRequest("fetch", "smtp", "mx", 25, 5))


def test_msmtp_command_line() -> None:
    command = client("msmtp").client_command(SUBMIT).partition(" | ")[2]
    assert shlex.split(command) == [
        "msmtp", "--file=/dev/null", "--debug", "--host=mx30.brainbird.nl", "--port=25", "--timeout=5",
        "--auth=off", "--tls=off", "--from=tester@skimbee.net", "--domain=client.skimbee.net", "--",
        "user@brainbird.nl"]
    with pytest.raises(ValueError, match="no option to use only ipv6"):
        client("msmtp").client_command(ClientRequest(**{**SUBMIT.__dict__, "family": "ipv6"}))


@pytest.mark.parametrize(("software", "request_"), [
    ("swaks", ClientRequest("fetch", "imap", "imap", 143, 5)),
    ("msmtp", ClientRequest("connect", "smtp", "mx", 25, 5)),
    ("curl", ClientRequest("submit", "smtp", "mx", 25, 5)),  # no sender, no recipients
    ("swaks", ClientRequest("submit", "smtp", "mx", 25, 0, sender="a@b", recipients=("c@d",))),
    ("curl", ClientRequest("connect", "smtp", "mx", 25, 5, family="ipv5")),
])
def test_requests_a_client_cannot_do_are_refused(software: str, request_: ClientRequest) -> None:
    with pytest.raises(ValueError):
        client(software).client_command(request_)


@pytest.mark.parametrize(("path", "ok", "reply"), [
    # swaks
    ("swaks/bookworm-submit-ok.json", True, "250 2.0.0 Ok: queued as 53A31BA09B"),
    ("swaks/trixie-submit-ok.json", True, "250 2.0.0 Ok: queued as DD7F0BA16A"),
    ("swaks/trixie-submit-ipv4.json", True, "250 2.0.0 Ok: queued as CD802BA198"),
    ("swaks/bookworm-submit-relay-denied.json", False, "554 5.7.1 <nobody@example.invalid>: Relay access denied"),
    ("swaks/bookworm-submit-port-refused.json", False,
     "Error connecting to mx30.brainbird.nl:26: IO::Socket::INET6: connect: Connection refused"),
    ("swaks/trixie-submit-port-refused.json", False, "Error connecting to mx30.brainbird.nl:26: Connection refused"),
    ("swaks/trixie-connect-ok.json", True, "220 mx30.brainbird.nl ESMTP"),
    ("trace/bookworm-swaks-blackhole-ipv6.json", False,
     "Error connecting to mx30.brainbird.nl:25: IO::Socket::INET6: connect: timeout"),
    ("trace/trixie-swaks-unreachable-ipv6.json", False, "Error connecting to mx20.brainbird.nl:25: Network is unreachable"),
    # curl
    ("curl/bookworm-submit-ok.json", True, "250 2.0.0 Ok: queued as 1AE79BA0A7"),
    ("curl/trixie-submit-relay-denied.json", False, "554 5.7.1 <nobody@example.invalid>: Relay access denied"),
    ("curl/trixie-submit-port-refused.json", False,
     "curl: (7) Failed to connect to mx30.brainbird.nl port 26 after 6 ms: Could not connect to server"),
    ("curl/bookworm-fetch-imap-ok.json", True, "A003 OK List completed (0.003 + 0.000 + 0.002 secs)."),
    ("curl/trixie-fetch-pop3-ok.json", True, "+OK 5 messages:"),
    ("curl/bookworm-fetch-imap-bad-password.json", False, "A002 NO [AUTHENTICATIONFAILED] Authentication failed."),
    # Dovecot never answered curl's POP3 AUTH PLAIN with a wrong password: curl's timeout decides.
    ("curl/bookworm-fetch-pop3-bad-password.json", False,
     "curl: (28) Operation timed out after 5001 milliseconds with 0 bytes received"),
    ("curl/trixie-connect-smtp.json", True, "220 mx30.brainbird.nl ESMTP"),
    ("curl/bookworm-connect-pop3.json", True, "+OK Dovecot (Debian) ready."),  # exit 8 after NOOP: connected is enough
    ("trace/trixie-curl-both-blackholed.json", False, "curl: (28) Connection timed out after 3002 milliseconds"),
    # msmtp
    ("msmtp/bookworm-submit-ok.json", True, "250 2.0.0 Ok: queued as ABA0ABA0E4"),
    ("msmtp/trixie-submit-relay-denied.json", False, "554 5.7.1 <nobody@example.invalid>: Relay access denied"),
    ("msmtp/trixie-submit-port-refused.json", False, "cannot connect to mx30.brainbird.nl, port 26: Connection refused"),
    ("trace/trixie-msmtp-blackhole-ipv6.json", True, "250 2.0.0 Ok: queued as EF1ABBA5A1"),
])
def test_outcome_of_recorded_real_runs(path: str, ok: bool, reply: str) -> None:
    software = path.split("/")[0]
    if software == "trace":
        software = Path(path).name.split("-")[1]
    outcome = client(software).outcome(*recorded(path))
    assert (outcome.ok, outcome.reply) == (ok, reply)


def test_outcome_details_say_where_it_connected() -> None:
    assert client("curl").outcome(*recorded("curl/bookworm-submit-ipv4.json")).detail == "connected to 198.18.4.30 port 25"
    assert client("swaks").outcome(*recorded("swaks/bookworm-submit-port-refused.json")).detail == (
        "never connected; swaks exit 2")
    assert client("msmtp").outcome(*recorded("msmtp/bookworm-submit-relay-denied.json")).detail == (
        "recipient address nobody@example.invalid not accepted by the server; could not send mail; msmtp exit 65")


@pytest.mark.parametrize(("software", "path", "reply"), [
    ("swaks", "swaks/trixie-submit-ok.json", "250 2.0.0 Ok: queued as DD7F0BA16A"),
    ("curl", "curl/trixie-submit-ok.json", "250 2.0.0 Ok: queued as 0173DBA17E"),
    ("msmtp", "msmtp/trixie-submit-ok.json", "250 2.0.0 Ok: queued as 795D4BA195"),
])
def test_send_step_reads_the_end_of_data_reply(software: str, path: str, reply: str) -> None:
    adapter = client(software)
    command = adapter.send_command(server="mx30.brainbird.nl", sender="a@skimbee.net", recipients=["u@brainbird.nl"],
                                   message_id="<m@x>", subject="s", helo="client.skimbee.net")
    # The send step reads stdout only: curl's and msmtp's transcripts are redirected there.
    assert software == "swaks" or command.endswith("2>&1")
    _, stdout, stderr = recorded(path)
    assert adapter.last_reply(stdout + stderr) == reply
