"""Programs that run INSIDE the lab's client containers (python3 stdlib only).

Each module is a self-contained program (no imports from ``testbed``, no
third-party packages), so the client image can install it as a command by
copying the file alone:

* ``resolver_model.py`` -> ``/usr/local/bin/tb-resolver-model``: BEHAVIOUR
  MODELS of resolvers that cannot run here (Mac OS X 10.6's getaddrinfo over
  mDNSResponder). Real DNS queries, modelled decision.
* ``pyclient.py`` -> ``/usr/local/bin/tb-pyclient``: Python's smtplib,
  imaplib and poplib as real mail clients; ``--first-address-only`` turns it
  into the BEHAVIOUR MODEL of Outlook 2007/2010 (no fallback to the next
  address).

The testbed imports them too, for unit tests (``testbed.clientprogs.*``).
"""
