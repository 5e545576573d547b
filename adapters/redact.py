"""What never leaves the daemon: credentials in settings dumps, URLs and log lines.

Used by the introspection settings endpoints (and so ``ipamctl env``), by
:meth:`adapters.ipamd.settings.Settings.public` (the start-up log line) and by the log
scrubber in :mod:`adapters.ipamd.logs`.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

REDACTED = "[redacted]"
SECRET_NAME_MARKERS = (
    "SECRET", "TOKEN", "PASSWORD", "PASSWD", "CREDENTIAL", "ACCESS_KEY", "SESSION", "AUTH",
)  # fmt: skip


def is_secret_name(name: str) -> bool:
    upper = name.upper()
    return any(marker in upper for marker in SECRET_NAME_MARKERS)


def redact_url(value: str) -> str:
    """``value`` without the ``user:password@`` part of a URL (other text unchanged)."""
    if "@" not in value or "://" not in value:
        return value
    try:
        parts = urlsplit(value)
    except ValueError:
        return REDACTED
    if "@" not in parts.netloc:
        return value
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{REDACTED}@{host}"))


def redact_setting(name: str, value: str) -> str:
    """The value shown for setting ``name``: blank for a credential-like name, else with any
    URL credentials removed."""
    if is_secret_name(name):
        return REDACTED
    return redact_url(value)
