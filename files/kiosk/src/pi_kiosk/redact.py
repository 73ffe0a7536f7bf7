"""URLs as the kiosk shows them: without the secrets a camera's or a server's URL may carry.

An IP camera's `rtsp://user:password@host/stream` (or `http://host/video.cgi?user=u&pwd=p`) is
a working credential, and logs, `/healthz`, `/metrics` and error messages leave the device. Every
place that prints `camera.source` or `server.url` prints `redact_url(...)` instead: the password
becomes `***`; the user name stays, it tells an operator which account the camera refused.
"""
from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

MASK = "***"
# Query parameters that carry a secret in cameras' and servers' URLs (pwd, password, token, api_key, ...).
_SECRET_PARAM = re.compile(r"pass|pwd|secret|token|key|auth|sig", re.IGNORECASE)


def redact_url(text: str) -> str:
    """`text` with any URL password and secret-looking query values masked; other text as it is."""
    if "://" not in text:
        return text  # a camera index, a device or a file path
    try:
        parts = urlsplit(text)
    except ValueError:  # unparsable (a bad IPv6 literal): nothing after the scheme is shown
        return text.partition("://")[0] + "://" + MASK
    netloc = parts.netloc
    userinfo, at, host = netloc.rpartition("@")  # the last "@": a password may hold an unescaped one
    if at and ":" in userinfo:
        netloc = f"{userinfo.partition(':')[0]}:{MASK}@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(_SECRET_PARAM.search(name) for name, _ in pairs):
            query = urlencode([(name, MASK if _SECRET_PARAM.search(name) else value) for name, value in pairs],
                              safe="*")
    return urlunsplit(parts._replace(netloc=netloc, query=query))
