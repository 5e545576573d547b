"""``ipamctl subnets`` and ``ipamctl fragmentation``: the node's share of its subnets and
how its /28 prefixes are used, from the daemon's introspection (``/v1/subnets``,
``/v1/fragmentation``). Repacking is only ever recommended: nothing here moves a pod."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any, TextIO

from adapters.ipamctl.render import as_json, table

Fetch = Callable[[str, str, float], Any]


def add_economy_parsers(sub: Any) -> None:
    sub.add_parser(
        "subnets",
        help="the node's subnets: free addresses, free /28 blocks (at most), this node's share",
        description="The node's subnets as EC2's DescribeSubnets last reported them (asked at "
        "most every 10 minutes, when someone looks) and what this node's ENIs take there.",
    )
    sub.add_parser(
        "fragmentation",
        help="the node's /28 prefixes by use and what repacking would free (a recommendation)",
        description="How full the node's /28 prefixes are, and which pods to restart so that "
        "whole prefixes empty and can go back to the subnet. Nothing is moved.",
    )


def plural(n: int, word: str) -> str:
    if n == 1:
        return f"1 {word}"
    return f"{n:,} {word}" + ("es" if word.endswith("x") else "s")


def pct(part: float, whole: float) -> str:
    return f"{part / whole:.1%}" if whole else "-"


def cmd_subnets(args: argparse.Namespace, out: TextIO, fetch: Fetch) -> int:
    doc = fetch(args.introspection, "/v1/subnets?wait=5", args.timeout + 5)
    if args.json:
        as_json(out, doc)
        return 0
    rows = []
    for s in doc["subnets"]:
        known = s["available"] is not None
        rows.append([
            s["subnet_id"], s["cidr"], s["availability_zone"] or "-", f"{s['usable']:,}",
            f"{s['available']:,}" if known else "?",
            pct(s["available"], s["usable"]) if known else "?",
            f"{s['free_prefixes_at_most']:,}" if known else "?",
            f"{s['node_taken']:,}", f"{s['node_idle']:,}",
            pct(s["node_taken"], s["usable"] - s["available"]) if known else "?",
        ])  # fmt: skip
    table(out, ["SUBNET", "CIDR", "AZ", "USABLE", "FREE", "FREE %", "FREE /28 (AT MOST)",
                "THIS NODE", "NODE IDLE", "NODE SHARE OF USED"], rows)  # fmt: skip
    ages = [s["age_s"] for s in doc["subnets"] if s["age_s"] is not None]
    interval = doc.get("refresh_interval_s")
    if ages:
        out.write(f"from DescribeSubnets {max(ages):.0f} s ago (asked at most every "
                  f"{interval:.0f} s, only when someone looks)\n")  # fmt: skip
    if doc.get("error"):
        out.write(f"DescribeSubnets failed: {doc['error']}\n")
    out.write("THIS NODE: addresses its ENIs take (pod addresses and each ENI's primary); "
              "NODE IDLE: of those, available or cooling (the warm pool); FREE /28: an "
              "upper bound, EC2 reports a count, not which addresses\n")  # fmt: skip
    unknown = any(s["available"] is None for s in doc["subnets"])
    return 1 if unknown else 0  # figures EC2 did not give: a problem, as ipamctl counts them


def cmd_fragmentation(args: argparse.Namespace, out: TextIO, fetch: Fetch) -> int:
    doc = fetch(args.introspection, "/v1/fragmentation", args.timeout)
    if args.json:
        as_json(out, doc)
        return 0
    if not doc["prefix_mode"]:
        out.write("no /28 prefixes on this node (prefix delegation is off): addresses are "
                  "single, nothing to repack\n")  # fmt: skip
        return 0
    rows = []
    for s in doc["subnets"]:
        u = s["by_use"]
        rows.append([s["subnet_id"], s["prefixes"], u["empty"], u["sparse"], u["partial"],
                     u["full"], s["assigned"], s["needed"], s["freeable"]])  # fmt: skip
    table(out, ["SUBNET", "PREFIXES", "EMPTY", "SPARSE", "PARTIAL", "FULL", "PODS",
                "NEEDED", "FREEABLE BY REPACKING"], rows)  # fmt: skip
    out.write("SPARSE: at most 4 of a prefix's 16 addresses in use; NEEDED: prefixes the "
              "pods would fill if packed\n")  # fmt: skip
    for s in doc["subnets"]:
        if s["freeable"] == 0:
            out.write(f"\n{s['subnet_id']}: nothing to gain, the pods already fill "
                      f"{s['needed']} of {s['prefixes'] - s['by_use']['empty']} used prefixes "
                      f"as tightly as they can\n")  # fmt: skip
            continue
        out.write(
            f"\n{s['subnet_id']}: restarting {plural(s['pods_to_move'], 'pod')} (they get "
            f"addresses on the fuller prefixes) would empty {plural(s['freeable'], 'more prefix')}"
            f"; with the {s['by_use']['empty']} already empty, {s['addresses_freed']} addresses "
            f"({plural(s['addresses_freed'] // 16, '/28 block')}) could go back to the subnet "
            "once the warm-pool policy lets them go. Recommendation only: ipamd moves no pod.\n"
        )
        for d in s["drain"]:
            out.write(f"  drain {d['prefix']} on {d['eni']} ({d['assigned']} pods): "
                      + (", ".join(d["pods"]) or "-") + "\n")  # fmt: skip
    return 0
