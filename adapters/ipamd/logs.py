"""Logging: structlog, JSON lines (plain text on a TTY), at AWS_VPC_K8S_CNI_LOGLEVEL.

No global configuration: :func:`make_logger` wraps a logger of its own (``structlog.configure``
is never called), so several daemons in one test process keep separate outputs. A redaction
processor drops the value of any field whose name looks like a credential, so a careless
``log.info(..., token=...)`` never reaches the log.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any, TextIO

import structlog

from adapters.redact import REDACTED

SECRET_MARKERS = ("secret", "token", "password", "credential", "access_key", "session_key")


def redact(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> Any:
    """Replace values of credential-like fields."""
    for key in list(event):
        low = key.lower()
        if any(marker in low for marker in SECRET_MARKERS):
            event[key] = REDACTED
    return event


SECRET_ENV = (
    "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ACCESS_KEY_ID",
)  # fmt: skip
MIN_SECRET_LEN = 8  # shorter values would blank ordinary words


def secret_values(env: Mapping[str, str]) -> tuple[str, ...]:
    """The credentials in ``env`` that must never appear in a log line."""
    return tuple(v for name in SECRET_ENV if len(v := env.get(name, "")) >= MIN_SECRET_LEN)


def scrubber(secrets: tuple[str, ...]) -> Callable[[Any, str, str], str]:
    """A final processor: blanks every occurrence of a known secret in the rendered line,
    wherever it came from (an exception text, a URL, a careless field)."""

    def scrub(_logger: Any, _method: str, line: str) -> str:
        for secret in secrets:
            if secret in line:
                line = line.replace(secret, REDACTED)
        return line

    return scrub


def make_logger(
    level: str = "INFO",
    json: bool | None = None,
    stream: TextIO | None = None,
    secrets: tuple[str, ...] = (),
) -> structlog.stdlib.BoundLogger:
    """A bound logger writing to ``stream`` (default stderr); ``json`` None = auto (TTY).
    ``secrets`` (see :func:`secret_values`) are blanked in every line."""
    out = stream if stream is not None else sys.stderr
    if json is None:
        json = not (hasattr(out, "isatty") and out.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    processors: list[Any] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact,
        structlog.processors.format_exc_info,
        renderer,
    ]
    if secrets:
        processors.append(scrubber(secrets))
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    logger: structlog.stdlib.BoundLogger = structlog.wrap_logger(
        structlog.PrintLogger(out),
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        cache_logger_on_first_use=True,
    )
    return logger


class LoopErrorLog:
    """The event loop's exception handler: one structured line per kind of error (its
    message and exception type), at most once per ``interval_s`` (monotonic), with the count
    of those suppressed since; no traceback. ``accept()`` failing for lack of descriptors
    under a connection flood used to write a traceback per attempt (66 MB)."""

    def __init__(
        self, log: Any, interval_s: float = 10.0, now: Callable[[], float] = time.monotonic
    ) -> None:
        self._log = log
        self._interval_s = interval_s
        self._now = now
        self._last: dict[tuple[str, str], float] = {}
        self._suppressed: dict[tuple[str, str], int] = {}

    def __call__(self, _loop: Any, context: Mapping[str, Any]) -> None:
        exc = context.get("exception")
        kind = (str(context.get("message", "")), type(exc).__name__ if exc else "")
        now = self._now()
        last = self._last.get(kind)
        if last is not None and now - last < self._interval_s:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return
        if len(self._last) > 1000:  # bounded memory, whatever the variety of errors
            self._last.clear()
        self._last[kind] = now
        suppressed = self._suppressed.pop(kind, 0)
        self._log.error(
            "event loop error", message=kind[0][:200], exception=kind[1],
            error=str(exc)[:200] if exc else "", suppressed_since_last=suppressed,
        )  # fmt: skip
