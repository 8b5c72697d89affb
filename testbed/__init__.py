"""IPv4/IPv6 mail interoperability testbed.

Kept free of imports on purpose: ``testbed.dnsserver`` is copied into the DNS
image, which has only the standard library and dnslib.
"""

__version__ = "0.1.0"
