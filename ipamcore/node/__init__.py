"""The node agent's decisions as a sans-I/O machine: :class:`Node` takes
:mod:`~ipamcore.node.inputs` (each with ``now``) and returns
:mod:`~ipamcore.node.commands`; an executor performs them (see :mod:`ipamcore.node.machine`)."""

from ipamcore.node.config import NodeConfig
from ipamcore.node.machine import Node

__all__ = ["Node", "NodeConfig"]
