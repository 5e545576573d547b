"""``ipamctl``: look at a node's VPC CNI from the command line.

Exit codes scripts can trust: 0 ok; 1 a problem was found or the daemon is unreachable;
2 usage error (argparse). ``--json`` prints one JSON document instead of tables.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any, TextIO

from adapters.ipamctl.doctor import FAIL, MIN_CNI_FOR_KUBERNETES, configured, run_doctor
from adapters.ipamctl.economy import add_economy_parsers, cmd_fragmentation, cmd_subnets
from adapters.ipamctl.flight import add_parsers as add_flight_parsers
from adapters.ipamctl.flight import run_explain, run_replay
from adapters.ipamctl.recommend import add_recommend_parser, run_recommend
from adapters.ipamctl.render import as_json, table
from adapters.ipamctl.simulate import (
    add_import_parser,
    add_simulate_parser,
    run_import,
    run_simulate,
)
from adapters.protocol import DEFAULT_SOCKET_PATH
from backends.checkpoint import DEFAULT_PATH, read_checkpoint_file
from ipamcore.errors import CheckpointError, UnknownInstanceType
from ipamcore.limits import limits_for

DEFAULT_INTROSPECTION = "http://127.0.0.1:61679"


class Unreachable(Exception):
    """The daemon's introspection endpoint did not answer."""


def fetch(base_url: str, path: str, timeout: float) -> Any:
    try:
        with urllib.request.urlopen(base_url.rstrip("/") + path, timeout=timeout) as response:
            return json.load(response)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise Unreachable(f"{base_url}{path}: {exc}") from None


def cmd_enis(args: argparse.Namespace, out: TextIO) -> int:
    doc = fetch(args.introspection, "/v1/enis", args.timeout)
    if args.json:
        as_json(out, doc)
        return 0
    rows = []
    for eni in doc["ENIs"].values():
        cidrs = eni["AvailableIPv4Cidrs"]
        assigned = sum(
            1 for c in cidrs.values() for a in c["IPAddresses"].values() if a["IPAMKey"]["ifName"]
        )
        prefixes = sum(1 for c in cidrs.values() if c["IsPrefix"])
        rows.append(
            [eni["ID"], eni.get("NetworkCard", 0), eni["DeviceNumber"],
             "yes" if eni["IsPrimary"] else "", len(cidrs), prefixes, assigned]
        )  # fmt: skip
    table(out, ["ENI", "CARD", "DEVICE", "PRIMARY", "CIDRS", "PREFIXES", "ASSIGNED"], rows)
    out.write(f"total {doc['TotalIPs']} addresses, {doc['AssignedIPs']} assigned\n")
    return 0


def cmd_pods(args: argparse.Namespace, out: TextIO) -> int:
    doc = fetch(args.introspection, "/v1/pods", args.timeout)
    if args.json:
        as_json(out, doc)
        return 0
    rows = [
        [p["Namespace"], p["Name"], p.get("Container", ""), p["IfName"], p["IP"], p["ENI"],
         p.get("NetworkCard", 0), p["DeviceNumber"]]
        for p in sorted(
            doc.values(),
            key=lambda p: (p["Namespace"], p["Name"], p["IfName"], p.get("Container", "")),
        )
    ]  # fmt: skip
    table(out, ["NAMESPACE", "POD", "CONTAINER", "IF", "IP", "ENI", "CARD", "DEVICE"], rows)
    return 0


def cmd_stats(args: argparse.Namespace, out: TextIO) -> int:
    doc = fetch(args.introspection, "/stats", args.timeout)
    if args.json:
        as_json(out, doc)
        return 0
    keys = ["enis", "max_enis", "total", "assigned", "cooling", "available", "prefixes",
            "max_pods", "ec2_calls_total"]  # fmt: skip
    table(out, ["FIGURE", "VALUE"], [[k, doc.get(k, "")] for k in keys])
    return 0


def cmd_env(args: argparse.Namespace, out: TextIO) -> int:
    doc = {
        "ipamd": fetch(args.introspection, "/v1/ipamd-env-settings", args.timeout),
        "networkutils": fetch(args.introspection, "/v1/networkutils-env-settings", args.timeout),
    }
    if args.json:
        as_json(out, doc)
        return 0
    rows = [[k, v] for part in doc.values() for k, v in sorted(part.items())]
    table(out, ["VARIABLE", "VALUE"], rows)
    return 0


def cmd_checkpoint(args: argparse.Namespace, out: TextIO) -> int:
    try:
        checkpoint = read_checkpoint_file(args.path)
    except (CheckpointError, OSError) as exc:
        sys.stderr.write(f"ipamctl: {args.path}: {exc}\n")
        return 1
    if checkpoint is None:
        sys.stderr.write(f"ipamctl: {args.path}: no checkpoint\n")
        return 1
    allocations = [
        {"networkName": a.key.network_name, "containerID": a.key.container_id,
         "ifName": a.key.if_name, "ipv4": a.ipv4 or "", "ipv6": a.ipv6 or "",
         "namespace": a.pod.namespace, "pod": a.pod.name, "allocatedAt": a.allocated_at}
        for a in checkpoint.allocations
    ]  # fmt: skip
    if args.json:
        released = [{"address": a, "releasedAt": t} for a, t in checkpoint.released_at]
        as_json(out, {"allocations": allocations, "releasedAddresses": released})
        return 0
    rows = [[a["namespace"], a["pod"], a["ifName"], a["ipv4"] or a["ipv6"], a["containerID"]]
            for a in allocations]  # fmt: skip
    table(out, ["NAMESPACE", "POD", "IF", "IP", "CONTAINER"], rows)
    out.write(f"{len(allocations)} allocations, {len(checkpoint.released_at)} release times\n")
    return 0


def cmd_max_pods(args: argparse.Namespace, out: TextIO) -> int:
    try:
        limits = limits_for(args.instance_type)
    except UnknownInstanceType:
        sys.stderr.write(f"ipamctl: unknown instance type {args.instance_type!r}\n")
        return 1
    pd = args.prefix_delegation
    if pd and not limits.supports_prefix_delegation:
        sys.stderr.write(f"ipamctl: {args.instance_type} does not support prefix delegation\n")
        return 1
    figure = limits.max_pods_prefix_delegation if pd else limits.max_pods
    if args.json:
        as_json(out, {"instance_type": args.instance_type, "prefix_delegation": pd,
                      "max_pods": figure, "max_enis": limits.max_enis,
                      "ipv4_per_eni": limits.ipv4_per_eni})  # fmt: skip
    else:
        out.write(f"{figure}\n")
    return 0


def cmd_doctor(args: argparse.Namespace, out: TextIO) -> int:
    # Given on the command line (or in this tool's environment) wins; else what the daemon
    # is configured with; else the defaults.
    daemon = configured(args.introspection, args.timeout)
    env = os.environ
    socket_path = args.socket or env.get("IPAMD_SOCKET") or daemon.get("IPAMD_SOCKET")
    checkpoint = (
        args.checkpoint or env.get("AWS_VPC_K8S_CNI_BACKING_STORE")
        or daemon.get("AWS_VPC_K8S_CNI_BACKING_STORE")
    )  # fmt: skip
    checks = run_doctor(
        socket_path or DEFAULT_SOCKET_PATH, checkpoint or DEFAULT_PATH, args.introspection,
        args.proc_root, args.kubernetes_version, args.cni_version, args.timeout,
        host_netns=args.host_netns or daemon.get("IPAMD_HOST_NETNS") or None,
    )  # fmt: skip
    if args.json:
        as_json(out, {"checks": [{"name": c.name, "status": c.status, "detail": c.detail}
                                 for c in checks]})  # fmt: skip
    else:
        table(out, ["CHECK", "STATUS", "DETAIL"], [[c.name, c.status, c.detail] for c in checks])
        if not args.kubernetes_version:
            out.write("minimum VPC CNI by Kubernetes version: " + ", ".join(
                f"{k} -> {v}" for k, v in MIN_CNI_FOR_KUBERNETES.items()) + "\n")  # fmt: skip
    return 1 if any(c.status == FAIL for c in checks) else 0


def cmd_health(args: argparse.Namespace, out: TextIO) -> int:
    from adapters.ipamctl.health import main as health

    return health(args.health_args)


def build_parser() -> argparse.ArgumentParser:
    env = os.environ
    parser = argparse.ArgumentParser(
        prog="ipamctl",
        description="Inspect the VPC CNI node agent (vpc-ipamd): ENIs, pods, pool figures, "
        "the checkpoint file, max pods per instance type, and a health check.",
        epilog="exit codes: 0 ok, 1 problem found or daemon unreachable, 2 usage error",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument(
        "--introspection", default=env.get("IPAMCTL_INTROSPECTION_URL", DEFAULT_INTROSPECTION),
        help="introspection base URL (default %(default)s; env IPAMCTL_INTROSPECTION_URL)",
    )  # fmt: skip
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds per request")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("enis", help="ENIs and their address blocks (from introspection)")
    sub.add_parser("pods", help="pods and their addresses (from introspection)")
    sub.add_parser("stats", help="pool figures and EC2 call counts (from introspection)")
    sub.add_parser("env", help="the daemon's environment settings (from introspection)")
    cp = sub.add_parser("checkpoint", help="read the checkpoint file directly (read-only)")
    cp.add_argument(
        "--path", default=env.get("AWS_VPC_K8S_CNI_BACKING_STORE", DEFAULT_PATH),
        help="checkpoint file (default %(default)s)",
    )  # fmt: skip
    mp = sub.add_parser("max-pods", help="max pods for an instance type (ENIs x (IPs-1) + 2)")
    mp.add_argument("instance_type", metavar="TYPE", help="e.g. m5.large")
    mp.add_argument("--prefix-delegation", action="store_true", help="with /28 prefixes")
    doc = sub.add_parser("doctor", help="check socket, checkpoint, introspection, kernel")
    doc.add_argument("--socket", default="", help="default: the daemon's IPAMD_SOCKET")
    doc.add_argument(
        "--checkpoint", default="", help="default: the daemon's AWS_VPC_K8S_CNI_BACKING_STORE"
    )
    doc.add_argument(
        "--host-netns", default="", help="namespace of the kernel checks (default: the daemon's "
        "IPAMD_HOST_NETNS, else this one)",
    )  # fmt: skip
    doc.add_argument("--proc-root", default="/proc", help="procfs root (default /proc)")
    doc.add_argument("--kubernetes-version", default="", help="e.g. 1.31 (checks the table)")
    doc.add_argument("--cni-version", default="", help="e.g. v1.21.1-eksbuild.8")
    add_economy_parsers(sub)
    health = sub.add_parser(
        "health", add_help=False,
        help="probe ipamd over its socket (exit 0 healthy): [--ready] [--ready-min-ips N]",
    )  # fmt: skip
    health.add_argument("health_args", nargs=argparse.REMAINDER)
    add_simulate_parser(sub)
    add_recommend_parser(sub)
    add_flight_parsers(sub)
    add_import_parser(sub)
    return parser


COMMANDS = {
    "enis": cmd_enis, "pods": cmd_pods, "stats": cmd_stats, "env": cmd_env,
    "checkpoint": cmd_checkpoint, "max-pods": cmd_max_pods, "doctor": cmd_doctor,
    "health": cmd_health,
    "simulate": run_simulate, "recommend": run_recommend, "replay": run_replay,
    "explain": run_explain,
    "import-trace": run_import,
    "subnets": lambda args, out: cmd_subnets(args, out, fetch),
    "fragmentation": lambda args, out: cmd_fragmentation(args, out, fetch),
}  # fmt: skip


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    if "health" in words:  # its options are its own (adapters.ipamctl.health)
        at = words.index("health")
        if all(w.startswith("-") for w in words[:at]):
            from adapters.ipamctl.health import main as health

            return health(words[at + 1 :])
    args = build_parser().parse_args(words)
    stream = out if out is not None else sys.stdout
    try:
        code: int = COMMANDS[args.command](args, stream)
        stream.flush()
    except Unreachable as exc:
        sys.stderr.write(f"ipamctl: daemon unreachable: {exc}\n")
        return 1
    except BrokenPipeError:
        # The reader went away (``ipamctl pods | head``): no traceback; stdout is pointed at
        # /dev/null so the interpreter's own flush at exit does not fail again.
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return 0
    return code


if __name__ == "__main__":
    sys.exit(main())
