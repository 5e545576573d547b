"""Errors and the shared vocabulary of pod pieces reported by ``check_pod``."""

from __future__ import annotations


class DatapathError(Exception):
    """A datapath operation failed (the backend has already undone its partial work)."""


class NetnsNotFound(DatapathError):
    """The network namespace path does not exist (it is never created by the backend)."""

    def __init__(self, path: str) -> None:
        super().__init__(f"network namespace {path!r} does not exist")
        self.path = path


class VethTaken(DatapathError):
    """A host link of the veth's name exists and is not this attachment's: never taken over."""

    def __init__(self, name: str) -> None:
        super().__init__(f"host veth {name} belongs to another attachment; not replaced")
        self.name = name


class SecondAttachment(DatapathError):
    """The pod's namespace already holds another attachment of this plugin."""

    def __init__(self, path: str, if_name: str) -> None:
        super().__init__(
            f"the pod namespace {path!r} already has an attachment of this plugin on "
            f"{if_name}; a second interface or network through this plugin is not supported"
        )
        self.if_name = if_name


class NotANetns(DatapathError):
    """The path is not a network namespace (a FIFO, a regular file, a link...): refused."""


class InjectedFault(DatapathError):
    """Raised by ``fail_next`` (tests): a failure on demand at a named step."""


# Names returned by check_pod (identical for every backend, so the contract can compare).
NETNS = "pod netns"
HOST_VETH = "host veth"
HOST_VETH_UP = "host veth up"
HOST_VETH_MTU = "host veth mtu"
POD_IF = "pod interface"
POD_IF_UP = "pod interface up"
POD_IF_MTU = "pod interface mtu"
POD_LO_UP = "pod lo up"
POD_ADDRESS = "pod address"
POD_GATEWAY_ROUTE = "pod route to 169.254.1.1"
POD_DEFAULT_ROUTE = "pod default route"
POD_GATEWAY_NEIGH = "pod neighbour 169.254.1.1"
POD_FROM_RULE = "pod rule from its address to its interface's table (multi-NIC)"
HOST_ROUTE = "host route to pod"
RULE_TO = "rule 512 to pod"
RULE_FROM = "rule 1536 from pod"

# Steps of setup_pod, in order (fail_next(..., step=...) targets one of them).
SETUP_POD_STEPS = ("veth", "pod_link", "pod_address", "pod_routes", "host_route", "rules")
