"""The one logger of the Kubernetes backend (its reflectors and its watcher), swappable so a
daemon logs it through its own logger (format, level, redaction)."""

from __future__ import annotations

from typing import Any

import structlog

log: Any = structlog.get_logger("ipamd.kube")


def use_logger(logger: Any) -> Any:
    """Log through ``logger`` instead of structlog's default one; returns the logger used until
    now (to put back)."""
    global log
    previous, log = log, logger
    return previous
