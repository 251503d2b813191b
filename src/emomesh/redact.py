"""Removing internal addresses from text shown to callers.

Error details from gRPC and tritonclient name the peer they failed to reach ("failed to connect to
all addresses; last error: UNKNOWN: ipv4:10.4.2.17:8001: Connection refused"). Passed on to a
caller, that maps the cluster for them. Services log the full text and send `scrub_addresses(text)`.
"""

from __future__ import annotations

import re

ADDRESS = "<address>"

_PATTERNS = [
    # URLs of any scheme (http://triton:8000/v2, redis://:password@host:6379/0), up to whitespace or a
    # quote, trailing punctuation left out.
    re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]*[^\s'\"<>:.,;)\]]"),
    # gRPC peer and target URIs: ipv4:1.2.3.4:8001, ipv6:[::1]:8001 or ipv6:%5B::1%5D:8001,
    # unix:/run/x.sock, unix-abstract:name, vsock:3:1234, dns:host:port.
    re.compile(
        r"\b(?:ipv4|ipv6|unix|unix-abstract|vsock|dns):(?:\[[^\]\s]*\](?::\d{1,5})?|[^\s,;'\"()<>{}\[\]]*[^\s,;'\"()<>{}\[\]:])"
    ),
    # Bracketed IPv6 with an optional port; bare IPv6 (eight groups, or shortened with "::", so that
    # a time of day is left alone); IPv4 with or without a port.
    re.compile(r"\[[0-9a-fA-F.%]*:[0-9a-fA-F:.%]*\](?::\d{1,5})?"),
    re.compile(
        r"(?<![\w:.])(?:(?:[0-9a-fA-F]{1,4}:){7}[0-9a-fA-F]{1,4}"
        r"|(?:[0-9a-fA-F]{1,4}:)*[0-9a-fA-F]{0,4}::(?:[0-9a-fA-F]{1,4}:)*[0-9a-fA-F]{0,4})(?![\w:])"
    ),
    re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?::\d{1,5})?(?![\w.])"),
    # host:port (triton:8001, vision.emomesh.svc.cluster.local:50051, localhost:8001).
    re.compile(r"(?<![\w.-])[a-zA-Z][a-zA-Z0-9-]*(?:\.[a-zA-Z0-9-]+)*:\d{1,5}(?![\w.])"),
]


def scrub_addresses(text: str) -> str:
    """text with every network address, socket path and URL replaced by "<address>"."""
    for pattern in _PATTERNS:
        text = pattern.sub(ADDRESS, text)
    return text
