"""Credentials never leave in text: URLs are shown with their secrets replaced by `***`.

Everything edgewave logs, raises or records about a remote (Git remote, bundle store,
monitoring store, tracking server, registry) goes through `redact`: a password or token in a
URL's user part, and query parameters that carry secrets, become `***`. An SSH user name
(`git@`, `site-a@`) says who, not how to get in, and is kept.
"""

from __future__ import annotations

import logging
import re

_URL_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][\w+.-]*)://(?P<user>[^/@\s:]*)(?::(?P<password>[^/@\s]*))?@")
_SECRET_QUERY = re.compile(
    r"(?P<key>[?&](?:[\w-]*(?:token|secret|password|passwd|signature|credential|key)[\w-]*))=(?P<value>[^&#\s]+)",
    re.IGNORECASE)
_KEEP_USER = {"ssh", "sftp", "git+ssh", "ssh+git", "scp"}


def _userinfo(match: re.Match) -> str:
    scheme, user, password = match["scheme"], match["user"], match["password"]
    if scheme.lower() in _KEEP_USER:
        return f"{scheme}://{user}{':***' if password is not None else ''}@"
    if password is None and not user:
        return match[0]
    return f"{scheme}://***@"


def redact(text: str) -> str:
    """`text` with every URL's password or token (user part, secret query values) replaced by ***."""
    text = _URL_USERINFO.sub(_userinfo, text)
    return _SECRET_QUERY.sub(lambda m: f"{m['key']}=***", text)


class RedactingFormatter(logging.Formatter):
    """A log formatter whose every line (tracebacks included) goes through `redact`."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))
