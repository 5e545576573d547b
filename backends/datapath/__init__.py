"""Datapath backends: Linux via pyroute2 (``LinuxDatapath``), in memory (``FakeDatapath``)."""

from backends.datapath.errors import DatapathError, InjectedFault, NetnsNotFound

__all__ = ["DatapathError", "InjectedFault", "NetnsNotFound"]
