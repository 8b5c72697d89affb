#!/usr/bin/env python3
"""tb-pyclient: Python's smtplib, imaplib and poplib as real mail clients.

    tb-pyclient --action submit|fetch|connect --protocol smtp|imap|pop3
                --server NAME --port N --timeout S [--first-address-only]
                [--from A --to B [--to C] --message-id ID --subject S --helo H]
                [--user U --password P]

Real software: the standard library's own clients, connecting the way they do,
through ``socket.create_connection``: every address getaddrinfo returns, one
after the other, each with the full ``--timeout`` (no Happy Eyeballs).

``--first-address-only`` makes it a BEHAVIOUR MODEL of Outlook 2007/2010
("does not fall back to IPv4", study slide 23): getaddrinfo, then a connection
to the first address only; if that fails, the action fails. The protocol
dialogue after the connection is still the standard library's.

Actions: ``submit`` (SMTP: EHLO, MAIL, RCPT, DATA, QUIT; ok when DATA is
accepted), ``fetch`` (IMAP: LOGIN, SELECT INBOX read-only, the Message-Ids;
POP3: USER, PASS, STAT, TOP n 0; ok when the mailbox was listed), ``connect``
(the greeting, then QUIT/LOGOUT; ok when the greeting is positive).

Prints a readable transcript ("-- " notes, "-> " client lines, "<- " server
lines; passwords masked) and, as its LAST line,
``tb-pyclient-result: {json}`` with ok, reply (the decisive server reply or
the error text), connected_to (the server address, or null), and more.
Exit status: 0 ok, 1 the action failed, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import email.parser
import email.utils
import imaplib
import json
import platform
import poplib
import smtplib
import socket
import sys
from typing import Any

RESULT_PREFIX = "tb-pyclient-result: "
OUTLOOK_MODEL = "Outlook 2007/2010: connects to the first address only, no IPv4 fallback (behaviour model)"
ACTIONS = ("submit", "fetch", "connect")
PROTOCOLS = ("smtp", "imap", "pop3")


class Session:
    """The transcript and the facts the result line reports."""

    def __init__(self, first_only: bool) -> None:
        self.first_only = first_only
        self.connected_to: str | None = None
        self.resolved: list[str] | None = None
        self.attempted: str | None = None

    @staticmethod
    def note(text: str) -> None:
        print(f"-- {text}", flush=True)

    @staticmethod
    def sent(text: str) -> None:
        print(f"-> {text}", flush=True)

    @staticmethod
    def got(text: str) -> None:
        for line in text.splitlines() or [""]:
            print(f"<- {line}", flush=True)

    def first_address(self, host: str, port: int, timeout: float | None) -> socket.socket:
        """The Outlook model's connection: getaddrinfo, then the first address and nothing else."""
        infos = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
        self.resolved = [sa[0] for *_, sa in infos]
        self.note(f"getaddrinfo {host}: {', '.join(self.resolved)}")
        family, stype, proto, _, sa = infos[0]
        self.attempted = sa[0]
        self.note(f"first address only (model): trying {sa[0]} port {port}")
        s = socket.socket(family, stype, proto)
        try:
            if timeout is not None:
                s.settimeout(timeout)
            s.connect(sa)
        except BaseException:
            s.close()
            raise
        return s

    def connected(self, sock: socket.socket | None) -> None:
        if sock is not None:
            self.connected_to = sock.getpeername()[0]
            self.note(f"connected to {self.connected_to}")


def _clients(session: Session) -> tuple[type, type, type]:
    """smtplib/imaplib/poplib classes whose socket comes from ``session`` in model mode."""

    class SMTP(smtplib.SMTP):
        def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:  # type: ignore[override]
            if session.first_only:
                return session.first_address(host, port, timeout)
            return super()._get_socket(host, port, timeout)

    class IMAP4(imaplib.IMAP4):
        def _create_socket(self, timeout: float | None) -> socket.socket:  # type: ignore[override]
            if session.first_only:
                return session.first_address(self.host, self.port, timeout)
            return super()._create_socket(timeout)

    class POP3(poplib.POP3):
        def _create_socket(self, timeout: float) -> socket.socket:  # type: ignore[override]
            if session.first_only:
                return session.first_address(self.host, self.port, timeout)
            return super()._create_socket(timeout)

    return SMTP, IMAP4, POP3


def _text(b: bytes | str) -> str:
    return b.decode("utf-8", "replace") if isinstance(b, bytes) else b


def _err(e: BaseException) -> str:
    """imaplib and poplib raise their errors with the server's bytes: the text of them."""
    return _text(e.args[0]) if e.args and isinstance(e.args[0], (bytes, str)) else str(e)


def _smtp_reply(code: int, msg: bytes | str) -> str:
    lines = _text(msg).splitlines() or [""]
    return "\n".join(f"{code}{'-' if i < len(lines) - 1 else ' '}{line}" for i, line in enumerate(lines))


class Failed(Exception):
    """The server refused a step: ``reply`` is its answer."""

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply


def smtp_session(args: argparse.Namespace, s: Session, cls: type) -> dict[str, Any]:
    smtp = cls(timeout=args.timeout)
    code, msg = smtp.connect(args.server, args.port)
    s.connected(smtp.sock)
    greeting = _smtp_reply(code, msg)
    s.got(greeting)
    if code != 220:
        raise Failed(greeting.splitlines()[-1])
    if args.action == "connect":
        _smtp_quit(smtp, s)
        return {"ok": True, "reply": greeting.splitlines()[-1]}
    s.sent(f"EHLO {args.helo}")
    code, msg = smtp.ehlo(args.helo)
    s.got(_smtp_reply(code, msg))
    if code != 250:
        s.sent(f"HELO {args.helo}")
        code, msg = smtp.helo(args.helo)
        s.got(_smtp_reply(code, msg))
        if code != 250:
            raise Failed(_smtp_reply(code, msg).splitlines()[-1])
    s.sent(f"MAIL FROM:<{args.sender}>")
    code, msg = smtp.mail(args.sender)
    s.got(_smtp_reply(code, msg))
    if code != 250:
        raise Failed(_smtp_reply(code, msg).splitlines()[-1])
    for rcpt in args.to:
        s.sent(f"RCPT TO:<{rcpt}>")
        code, msg = smtp.rcpt(rcpt)
        s.got(_smtp_reply(code, msg))
        if code not in (250, 251):
            raise Failed(_smtp_reply(code, msg).splitlines()[-1])
    message = (
        f"From: <{args.sender}>\r\n"
        f"To: {', '.join(f'<{r}>' for r in args.to)}\r\n"
        f"Subject: {args.subject}\r\n"
        f"Message-Id: {args.message_id}\r\n"
        f"Date: {email.utils.formatdate(localtime=True)}\r\n"
        f"\r\n"
        f"testbed message {args.message_id}\r\n"
    )
    s.sent("DATA")
    code, msg = smtp.data(message)
    reply = _smtp_reply(code, msg)
    s.note(f"message sent: Message-Id {args.message_id}")
    s.got(reply)
    _smtp_quit(smtp, s)
    return {"ok": code == 250, "reply": reply.splitlines()[-1]}


def _smtp_quit(smtp: smtplib.SMTP, s: Session) -> None:
    s.sent("QUIT")
    try:
        code, msg = smtp.quit()
        s.got(_smtp_reply(code, msg))
    except (smtplib.SMTPException, OSError) as e:
        s.note(f"QUIT: {type(e).__name__}: {e}")


def _message_id(header_bytes: bytes) -> str | None:
    value = email.parser.BytesHeaderParser().parsebytes(header_bytes).get("Message-Id")
    return " ".join(str(value).split()) if value else None


def imap_session(args: argparse.Namespace, s: Session, cls: type) -> dict[str, Any]:
    try:
        imap = cls(args.server, args.port, timeout=args.timeout)
    except imaplib.IMAP4.error as e:
        raise Failed(_err(e)) from None
    s.connected(imap.sock)
    greeting = _text(imap.welcome)
    s.got(greeting)
    if args.action == "connect":
        s.sent("LOGOUT")
        typ, data = imap.logout()
        s.got(f"{typ} {_text(data[0]) if data and data[0] else ''}".strip())
        return {"ok": greeting.startswith("* OK"), "reply": greeting}
    s.sent(f"LOGIN {args.user} ****")
    try:
        typ, data = imap.login(args.user, args.password)
    except imaplib.IMAP4.error as e:
        s.got(f"NO {_err(e)}")
        raise Failed(f"NO {_err(e)}") from None
    login = f"{typ} {_text(data[0]) if data and data[0] else ''}".strip()
    s.got(login)
    s.sent("SELECT INBOX (read-only: EXAMINE)")
    typ, data = imap.select("INBOX", readonly=True)
    if typ != "OK":
        s.got(f"{typ} {_text(data[0]) if data and data[0] else ''}")
        raise Failed(f"SELECT INBOX: {typ} {_text(data[0]) if data and data[0] else ''}".strip())
    count = int(data[0]) if data and data[0] else 0
    s.got(f"* {count} EXISTS")
    ids: list[str] = []
    if count:
        s.sent("FETCH 1:* (BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
        typ, data = imap.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
        for item in data or []:
            if isinstance(item, tuple) and len(item) > 1:
                mid = _message_id(item[1])
                if mid:
                    ids.append(mid)
                    s.got(f"Message-Id: {mid}")
        s.got(f"{typ} FETCH")
    s.sent("LOGOUT")
    typ, data = imap.logout()
    s.got(f"{typ} {_text(data[0]) if data and data[0] else ''}".strip())
    return {"ok": True, "reply": login, "messages": count, "message_ids": ids}


def pop3_session(args: argparse.Namespace, s: Session, cls: type) -> dict[str, Any]:
    try:
        pop = cls(args.server, args.port, timeout=args.timeout)
    except poplib.error_proto as e:
        raise Failed(_err(e)) from None
    s.connected(pop.sock)
    greeting = _text(pop.getwelcome())
    s.got(greeting)
    if args.action == "connect":
        s.sent("QUIT")
        s.got(_text(pop.quit()))
        return {"ok": greeting.startswith("+OK"), "reply": greeting}
    try:
        s.sent(f"USER {args.user}")
        s.got(_text(pop.user(args.user)))
        s.sent("PASS ****")
        login = _text(pop.pass_(args.password))
    except poplib.error_proto as e:
        reply = _err(e)
        s.got(reply)
        raise Failed(reply) from None
    s.got(login)
    s.sent("STAT")
    count, size = pop.stat()
    s.got(f"+OK {count} {size}")
    ids: list[str] = []
    for i in range(1, count + 1):
        s.sent(f"TOP {i} 0")
        resp, lines, _octets = pop.top(i, 0)
        s.got(_text(resp))
        mid = _message_id(b"\r\n".join(lines) + b"\r\n\r\n")
        if mid:
            ids.append(mid)
            s.got(f"Message-Id: {mid}")
    s.sent("QUIT")
    s.got(_text(pop.quit()))
    return {"ok": True, "reply": login, "messages": count, "message_ids": ids}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="tb-pyclient",
        description="Python's smtplib/imaplib/poplib as real mail clients (sequential fallback through "
                    "socket.create_connection). --first-address-only: the Outlook 2007/2010 BEHAVIOUR MODEL.")
    ap.add_argument("--action", required=True, choices=ACTIONS)
    ap.add_argument("--protocol", required=True, choices=PROTOCOLS)
    ap.add_argument("--server", required=True, help="the server's DNS name (resolved by the client)")
    ap.add_argument("--port", required=True, type=int)
    ap.add_argument("--timeout", required=True, type=float, help="socket timeout per connection attempt and read")
    ap.add_argument("--first-address-only", action="store_true",
                    help="behaviour model of Outlook 2007/2010: connect to getaddrinfo's first address only")
    ap.add_argument("--from", dest="sender", default="")
    ap.add_argument("--to", action="append", default=[])
    ap.add_argument("--message-id", default="")
    ap.add_argument("--subject", default="")
    ap.add_argument("--helo", default="")
    ap.add_argument("--user", default="")
    ap.add_argument("--password", default="")
    args = ap.parse_args(argv)
    if args.action == "submit" and args.protocol != "smtp":
        ap.error("submit needs --protocol smtp")
    if args.action == "fetch" and args.protocol == "smtp":
        ap.error("fetch needs --protocol imap or pop3")
    if args.action == "submit":
        missing = [o for o, v in (("--from", args.sender), ("--to", args.to), ("--message-id", args.message_id),
                                  ("--helo", args.helo)) if not v]
        if missing:
            ap.error(f"submit needs {', '.join(missing)}")
    if args.action == "fetch" and not (args.user and args.password):
        ap.error("fetch needs --user and --password")
    if not args.timeout > 0:
        ap.error("--timeout must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    session = Session(args.first_address_only)
    smtp_cls, imap_cls, pop_cls = _clients(session)
    lib = {"smtp": "smtplib", "imap": "imaplib", "pop3": "poplib"}[args.protocol]
    how = ("first address only: Outlook 2007/2010 behaviour model" if args.first_address_only
           else "sequential fallback: socket.create_connection")
    session.note(f"tb-pyclient (Python {platform.python_version()} {lib}): {args.action} over {args.protocol} "
                 f"to {args.server} port {args.port}, timeout {args.timeout:g} s, {how}")
    result: dict[str, Any]
    error = None
    try:
        if args.protocol == "smtp":
            result = smtp_session(args, session, smtp_cls)
        elif args.protocol == "imap":
            result = imap_session(args, session, imap_cls)
        else:
            result = pop3_session(args, session, pop_cls)
    except Failed as e:
        result = {"ok": False, "reply": e.reply}
    except (OSError, EOFError, smtplib.SMTPException, imaplib.IMAP4.error, poplib.error_proto, ValueError) as e:
        error = f"{type(e).__name__}: {_err(e)}"
        session.note(error)
        result = {"ok": False, "reply": error}
    out: dict[str, Any] = {
        "ok": bool(result["ok"]),
        "reply": result.get("reply"),
        "connected_to": session.connected_to,
        "action": args.action,
        "protocol": args.protocol,
        "server": args.server,
        "port": args.port,
        "mode": "first-address-only" if args.first_address_only else "sequential",
        "model": OUTLOOK_MODEL if args.first_address_only else None,
        "error": error,
        "python": platform.python_version(),
    }
    if args.first_address_only:
        out["resolved"] = session.resolved
        out["attempted"] = session.attempted
    for key in ("messages", "message_ids"):
        if key in result:
            out[key] = result[key]
    print(RESULT_PREFIX + json.dumps(out), flush=True)
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
