"""The lab's authoritative DNS server, with scriptable faults.

Runs inside the DNS container with only the standard library and dnslib, so
nothing here may import from the rest of ``testbed``. Entry points:

* ``python3 -m testbed.dnsserver --config FILE --query-log FILE [--control SOCK]``
* ``python3 -m testbed.dnsserver.ctl --control SOCK {list|set|add|clear}``
* :class:`testbed.dnsserver.server.LabDNSServer` for in-process use.

See ``docs/dns.md`` for the config, rule language and query log format.
"""
