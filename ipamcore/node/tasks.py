"""The node's tasks: generators that yield what they wait for, resumed by inputs.

A decision that spans several commands (an ADD: assign, set up the pod and persist at once,
reply when both are done) is written as one generator. It yields a *wait*: a command with a
``cid`` (resumed with the input that answers it), :data:`DURABLE` (resumed once a checkpoint
taken after the yield is written: ``None``, or the ``Failed`` input), a :class:`Sleep` (resumed
at a tick at or after ``until``), an :class:`AddressWait` (resumed with an allocation, or
``None`` when its deadline passed or it was cancelled), a :class:`CardWait` (a multi-NIC
ADD's addresses on cards above 0; resumed once it has them all, or at its deadline or
cancellation), or a :class:`Turn` (resumed once no other task holds the key). A tuple of
waits resumes with a tuple of their results, once all are in. Nothing here does I/O:
:class:`~ipamcore.node.machine.Node` routes the answers.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import attrs

from ipamcore.model import Allocation, AllocationKey, PodRef


@attrs.frozen
class Sleep:
    """Wait: resume at the first tick at or after ``until``."""

    until: float


@attrs.frozen
class Turn:
    """Wait: resume once no other task holds ``key``."""

    key: AllocationKey


@attrs.define(eq=False)
class AddressWait:
    """A waiting ADD: FIFO among the others, served on each pool change until ``deadline``.
    ``request`` is the ADD it answers: a newer ADD for the same attachment takes its place.
    ``cancelled`` says why it stopped waiting without an address ("" while it waits)."""

    key: AllocationKey
    pod: PodRef
    since: float
    deadline: float
    request: Any = None
    task: Task | None = None
    cancelled: str = ""


@attrs.define(eq=False)
class CardWait(AddressWait):
    """A multi-NIC ADD waiting for its addresses on network cards above 0 (card 0's it has):
    ``missing`` maps each card still without one to the attachment key it is for, ``got``
    holds those taken meanwhile. Served first come, first served per card on each pool
    change until ``deadline``; counted as waiting on each missing card, so the policy grows
    those cards. The other fields as in :class:`AddressWait` (``key`` is the pod's first
    attachment)."""

    missing: dict[int, AllocationKey] = attrs.field(factory=dict)
    got: list[Allocation] = attrs.field(factory=list)


class _Durable:
    def __repr__(self) -> str:
        return "DURABLE"


DURABLE = _Durable()

TaskGen = Generator[Any, Any, None]


class Task:
    """One running generator and the results it is waiting for."""

    __slots__ = ("gen", "missing", "name", "results", "single")

    def __init__(self, gen: TaskGen, name: str) -> None:
        self.gen = gen
        self.name = name
        self.results: list[Any] = []
        self.missing = 0
        self.single = True

    def __repr__(self) -> str:
        return f"Task({self.name})"
