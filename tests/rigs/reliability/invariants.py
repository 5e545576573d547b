"""What the clients of a crashing daemon saw, and the invariants a restart must keep.

The :class:`Ledger` is the runtime's (kubelet's) side of the story: which ADDs and DELs were
acknowledged, which were in flight when the daemon died, and when each address was last
given back. It does no I/O: the crash campaign feeds it replies and the daemon's state after
each restart and collects :class:`Violation` records. Times are the client's monotonic
seconds; they only bound the daemon's own times, so every check errs towards "no violation"
(a check that flags a violation is certain of it).

Invariants (checked after every restart, and on every acknowledged ADD):

* ``acked-lost``: every acknowledged allocation (ADD answered, no DEL sent since) is held by
  the restarted daemon, at the same address;
* ``double``: no address is held by two pod interfaces, in the daemon or in what the clients
  were told;
* ``cooldown``: an address given back (DEL sent at ``t``) is not handed out again before
  ``t + cooldown``, across restarts included;
* ``leaked``: once the runtime has retried what was in doubt (a DEL for every ADD or DEL that
  got no answer), the daemon holds exactly the acknowledged allocations;
* ``eni-leaked`` / ``eni-unknown``: no available ENI tagged for the instance is left after a
  start, and every ENI attached to the instance is in the daemon's pool.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping

import attrs


@attrs.frozen
class Violation:
    """One broken invariant: ``kind`` (see the module docstring) and what was seen."""

    kind: str
    detail: str


@attrs.define
class Ledger:
    """Thread-safe record of the clients' view; see the module docstring."""

    cooldown_s: float
    held: dict[str, str] = attrs.field(factory=dict)  # key -> address, acknowledged
    in_doubt: set[str] = attrs.field(factory=set)  # keys whose last ADD/DEL got no answer
    given_back: dict[str, float] = attrs.field(factory=dict)  # address -> last DEL send time
    violations: list[Violation] = attrs.field(factory=list)
    adds_acked: int = 0
    dels_acked: int = 0
    _lock: threading.Lock = attrs.field(factory=threading.Lock)

    # -------------------------------------------------------------- replies as they come
    def add_acked(self, key: str, address: str, acked_at: float) -> None:
        """An ADD for ``key`` answered ``address`` at ``acked_at``."""
        with self._lock:
            self.adds_acked += 1
            self.in_doubt.discard(key)
            for other, held in self.held.items():
                if held == address and other != key:
                    self._violate("double", f"{address} given to {key}, held by {other}")
            back = self.given_back.get(address)
            if back is not None and acked_at < back + self.cooldown_s:
                self._violate(
                    "cooldown",
                    f"{address} handed to {key} {acked_at - back:.3f}s after it was given "
                    f"back (cooldown {self.cooldown_s:g}s)",
                )
            self.held[key] = address

    def add_failed(self, key: str) -> None:
        """An ADD got an error reply: the runtime will DEL it (as CNI requires)."""
        with self._lock:
            self.in_doubt.add(key)

    def del_sent(self, key: str, sent_at: float, address: str | None = None) -> None:
        """A DEL for ``key`` is about to be sent: from now its address may be released.
        ``address``: what the daemon was seen to hold for a key in doubt."""
        with self._lock:
            held = self.held.pop(key, None) or address
            if held is not None:
                self.given_back[held] = sent_at
            self.in_doubt.add(key)

    def del_acked(self, key: str) -> None:
        with self._lock:
            self.dels_acked += 1
            self.in_doubt.discard(key)

    def in_doubt_now(self, key: str) -> None:
        """A request for ``key`` got no answer (the daemon died under it)."""
        with self._lock:
            self.in_doubt.add(key)

    # -------------------------------------------------------------- after a restart
    def check_restored(self, daemon_pods: Mapping[str, str]) -> list[Violation]:
        """``daemon_pods``: key -> address the restarted daemon holds. Acknowledged ones are
        kept, no address twice, nothing outside acknowledged + in doubt."""
        found: list[Violation] = []
        with self._lock:
            for key, address in self.held.items():
                got = daemon_pods.get(key)
                if got != address:
                    found.append(Violation("acked-lost", f"{key}: acked {address}, now {got}"))
            found += _doubles(daemon_pods)
            for key in daemon_pods:
                if key not in self.held and key not in self.in_doubt:
                    found.append(Violation("leaked", f"{key} held but never acked nor in doubt"))
            self.violations += found
        return found

    def check_settled(self, daemon_pods: Mapping[str, str]) -> list[Violation]:
        """After the runtime's DELs of everything in doubt: exactly the acknowledged set."""
        found: list[Violation] = []
        with self._lock:
            if dict(daemon_pods) != self.held:
                extra = sorted(set(daemon_pods) - set(self.held))
                missing = sorted(set(self.held) - set(daemon_pods))
                found.append(Violation("leaked", f"extra {extra[:5]}, missing {missing[:5]}"))
            self.violations += found
        return found

    def check_enis(
        self, daemon_enis: Iterable[str], attached: Iterable[str], available: Iterable[str]
    ) -> list[Violation]:
        """ENIs: the cloud's attached ones are all in the pool; none of ours is left
        available (created and not attached, or detached and not deleted). Not recorded:
        the caller retries while the daemon's policy may be mid-change, then records."""
        found = [Violation("eni-leaked", f"{eni} available") for eni in sorted(available)]
        known = set(daemon_enis)
        found += [
            Violation("eni-unknown", f"{eni} attached, not in the pool")
            for eni in sorted(attached)
            if eni not in known
        ]
        return found

    def record(self, found: Iterable[Violation]) -> None:
        with self._lock:
            self.violations += list(found)

    def doubtful(self) -> list[str]:
        with self._lock:
            return sorted(self.in_doubt)

    def _violate(self, kind: str, detail: str) -> None:
        self.violations.append(Violation(kind, detail))


def _doubles(pods: Mapping[str, str]) -> list[Violation]:
    owners: dict[str, str] = {}
    found = []
    for key, address in sorted(pods.items()):
        if address in owners:
            found.append(Violation("double", f"{address} held by {owners[address]} and {key}"))
        owners[address] = key
    return found
