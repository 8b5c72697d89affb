"""BEHAVIOUR MODEL of Outlook 2007/2010's connection behaviour (Outlook cannot run in the lab).

The study (slide 23, "Implementation problems on clients"): "Outlook
2007/2010 does not fall back to IPv4". The model: resolve with getaddrinfo,
connect to the FIRST address only; when that fails, the action fails. It is
``tb-pyclient --first-address-only`` (testbed/clientprogs/pyclient.py): the
connection is modelled, the SMTP/IMAP/POP3 dialogue after it is Python's
standard library talking to the real servers. Bookworm's swaks (real
software, IO::Socket::INET6 without MultiHomed) behaves the same way, so a
lab may run both and they must agree.
"""

from __future__ import annotations

from typing import ClassVar

from .python import PythonClient


class OutlookModel(PythonClient):
    """A labelled behaviour model, not Outlook."""

    software = "outlook-model"
    model_of: ClassVar[str | None] = "Outlook 2007/2010: connects to the first address only, no IPv4 fallback"
    model_source: ClassVar[str | None] = (
        "Timmers & Carlier, 'Message Agents and IPv6 interoperability problems' (UvA SNE / SARA, 2010), "
        "slide 23: 'Outlook 2007/2010 does not fall back to IPv4'; modelled as getaddrinfo's first address "
        "only (tb-pyclient --first-address-only), the behaviour of bookworm's swaks (IO::Socket::INET6 "
        "without MultiHomed), which is real software"
    )
    first_address_only: ClassVar[bool] = True

    def version_command(self) -> str | None:
        return ("echo 'outlook-model: behaviour model of Outlook 2007/2010 (tb-pyclient --first-address-only), "
                "not Outlook'; python3 --version")
