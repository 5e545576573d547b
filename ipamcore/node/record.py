"""The flight record: a node's inputs as JSON lines, and a replay that checks its commands.

A record is one line per input, ``{"in": <input>, "out": <digest of its commands>}``, after a
first line ``{"config": <NodeConfig>}``. Feeding the inputs of a record to a new
:class:`~ipamcore.node.machine.Node` with that configuration gives the same commands, bit for
bit (the node is deterministic); :func:`replay` checks every digest. Values are encoded
generically and positionally (attrs classes, named tuples, enums, tuples, frozensets: see
:func:`encode`), so floats round-trip exactly. Pure: the shell reads and writes the lines.
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import attrs

from ipamcore import checkpoint, config, effects, errors, events, limits, model, netspec
from ipamcore.node import commands, inputs
from ipamcore.node import config as node_config
from ipamcore.node.machine import Node

_MODULES = (
    inputs, commands, node_config, config, model, events, effects, errors, limits, netspec,
    checkpoint,
)  # fmt: skip


def _registry() -> dict[str, type]:
    found: dict[str, type] = {}
    for module in _MODULES:
        for name, value in vars(module).items():
            if not isinstance(value, type) or value.__module__ != module.__name__:
                continue
            if attrs.has(value) or issubclass(value, enum.Enum) or hasattr(value, "_fields"):
                found[name] = value
    return found


_TYPES = _registry()
_ATTRS_FIELDS: dict[type, tuple[str, ...]] = {
    cls: tuple(f.name for f in attrs.fields(cls) if f.init)
    for cls in _TYPES.values()
    if attrs.has(cls)
}
_SCALARS = (type(None), bool, int, float, str)
# A value that is not a scalar is a JSON list whose first item says what it is.
_CLASS, _TUPLE, _SET, _ENUM, _DICT = range(5)


def encode(value: Any) -> Any:
    """``value`` as JSON data (see the module docstring): an attrs class or named tuple is
    ``[0, name, *fields]``, a tuple ``[1, *items]``, a frozenset ``[2, *sorted items]``, an
    enum ``[3, name, value]``, a dict ``[4, [key, value]...]``."""
    kind = type(value)
    if kind in _SCALARS:
        return value
    names = _ATTRS_FIELDS.get(kind)
    if names is not None:  # (scalars inline: most fields are; a call each costs more)
        out: list[Any] = [_CLASS, kind.__name__]
        for n in names:
            v = getattr(value, n)
            out.append(v if type(v) in _SCALARS else encode(v))
        return out
    if kind is tuple or kind is list:
        return [_TUPLE, *[v if type(v) in _SCALARS else encode(v) for v in value]]
    if isinstance(value, enum.Enum):
        return [_ENUM, kind.__name__, value.value]
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return [_CLASS, kind.__name__, *[encode(v) for v in value]]
    if isinstance(value, frozenset | set):
        return [_SET, *sorted((encode(v) for v in value), key=json.dumps)]
    if isinstance(value, dict):
        return [_DICT, *[[encode(k), encode(v)] for k, v in value.items()]]
    raise TypeError(f"cannot record a {kind.__name__}")


def decode(data: Any) -> Any:
    """The value :func:`encode` made ``data`` from."""
    if not isinstance(data, list):
        return data
    tag = data[0]
    if tag == _TUPLE:
        return tuple(decode(v) for v in data[1:])
    if tag == _CLASS:
        return _TYPES[data[1]](*(decode(v) for v in data[2:]))
    if tag == _SET:
        return frozenset(decode(v) for v in data[1:])
    if tag == _ENUM:
        return _TYPES[data[1]](data[2])
    return {decode(k): decode(v) for k, v in data[1:]}


def digest(out: Iterable[commands.Command]) -> str:
    """A short fingerprint of a list of commands (what a record keeps of them): of their
    ``repr``, which attrs makes from every field (commands hold no sets, whose order could
    differ between processes)."""
    return hashlib.blake2b(repr(list(out)).encode(), digest_size=8).hexdigest()


def config_line(config_: node_config.NodeConfig, wall_offset: float = 0.0) -> str:
    """The first line of a run. ``wall_offset`` (wall time minus the inputs' ``now``, as
    the executor saw it then) lets a reader show wall-clock times."""
    doc = {"config": encode(config_), "wall_offset": wall_offset}
    return json.dumps(doc, separators=(",", ":"))


_compact_json = json.JSONEncoder(separators=(",", ":")).encode  # json.dumps, made once


def input_line(inp: inputs.Input, out: list[commands.Command]) -> str:
    """One flight-recorder line: the input and a digest of the commands it produced (the
    text ``json.dumps({"in": ..., "out": ...}, separators=(",", ":"))`` writes)."""
    return f'{{"in":{_compact_json(encode(inp))},"out":"{digest(out)}"}}'


@attrs.frozen
class Step:
    """One input of a record, the commands a replay gave for it, and whether they match."""

    index: int
    input: inputs.Input
    commands: tuple[commands.Command, ...]
    matches: bool


@attrs.frozen
class Record:
    """A record's last run: its configuration (None when the run's start was rotated
    away), the wall offset and the (input, digest) pairs."""

    config: node_config.NodeConfig | None
    wall_offset: float
    steps: tuple[tuple[Any, str], ...]


def read(lines: Iterable[str]) -> Record:
    """The last run of a record's lines (a torn last line is skipped)."""
    config_: node_config.NodeConfig | None = None
    offset = 0.0
    steps: list[tuple[Any, str]] = []
    for line in lines:
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if "config" in doc:  # a new run begins
            config_, offset, steps = decode(doc["config"]), float(doc.get("wall_offset", 0)), []
        elif "in" in doc:
            steps.append((decode(doc["in"]), str(doc.get("out", ""))))
    return Record(config_, offset, tuple(steps))


def replay(
    config_: node_config.NodeConfig,
    steps: Iterable[tuple[Any, str]],
    watch: Callable[[Node, Step], None] | None = None,
) -> Iterator[Step]:
    """Feed the recorded inputs to a new node; yields each step with its commands and
    whether their digest is the recorded one. ``watch(node, step)`` may look at the node
    after each step (explain does)."""
    node = Node(config_)
    for index, (inp, recorded) in enumerate(steps):
        out = node.receive(inp)
        step = Step(index, inp, tuple(out), digest(out) == recorded)
        if watch is not None:
            watch(node, step)
        yield step
