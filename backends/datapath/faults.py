"""Fault injection shared by the datapath backends: make the next operation fail at a step."""

from __future__ import annotations

from backends.datapath import errors as E


class FaultInjection:
    """Mixin: ``fail_next`` arms a fault; the backend calls ``_step`` at each setup step."""

    _faults: dict[str, tuple[str | None, Exception]]

    def _init_faults(self) -> None:
        self._faults = {}

    def fail_next(
        self, operation: str, step: str | None = None, error: Exception | None = None
    ) -> None:
        """Make the next ``operation`` fail (at ``step``, see errors.SETUP_POD_STEPS)."""
        self._faults[operation] = (step, error or E.InjectedFault(f"{operation} {step}"))

    def _step(self, operation: str, step: str) -> None:
        fault = self._faults.get(operation)
        if fault is not None and fault[0] in (None, step):
            del self._faults[operation]
            raise fault[1]
