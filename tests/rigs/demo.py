"""The main job on an embedded default: a simulated node against a local moto server.

``./dev demo`` (or ``python -m tests.rigs.demo``) starts moto_server on loopback, the metadata
server, and vpc-ipamd with the EC2 backend; creates a few pods through the CNI plugin; shows
``ipamctl enis``, ``ipamctl pods`` and ``ipamctl stats``; pings between pods when the datapath
is real; then deletes the pods and cleans everything up. Without root it says so and uses the
fake datapath. The node is an m5.large (3 ENIs x 10 addresses): the default 12 pods need a
second ENI, which the harness hot-plugs into the node namespace as EC2's hypervisor would.

It behaves as a container runtime does: an ADD answered "try again later" (CNI code 11: the
pool is waiting for an ENI, slow on a busy machine) is retried with a backoff, for up to
``--add-deadline`` seconds. It fails (exit 1, one line saying why) if a pod cannot be added
in that time or a ping between pods fails; the work directory with ``ipamd.log``,
``moto.log`` and ``plugin.log`` is then kept, and its path printed.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

from tests.rigs.cni_runtime import CniError
from tests.rigs.localnode import LocalNode, Pod, local_node, real_datapath_possible

TRY_AGAIN = 11  # the CNI spec's "try again later"
RETRY_FIRST_S = 0.5
RETRY_MAX_S = 4.0


class DemoFailed(Exception):
    """Something the demo shows did not work (an ADD never succeeded, a ping failed)."""


def say(text: str) -> None:
    print(text, flush=True)


def add_like_a_runtime(
    node: LocalNode,
    name: str,
    deadline_s: float,
    sleep: Callable[[float], None] = time.sleep,
    now: Callable[[], float] = time.monotonic,
) -> Pod:
    """ADD ``name``, retrying "try again later" with a capped backoff until ``deadline_s``
    passes (a kubelet retries such an ADD too)."""
    give_up = now() + deadline_s
    delay = RETRY_FIRST_S
    while True:
        try:
            return node.add_pod(name)
        except CniError as exc:
            code = exc.doc.get("code") if isinstance(exc.doc, dict) else None
            if code != TRY_AGAIN or now() + delay > give_up:
                raise DemoFailed(f"ADD {name} failed: {exc.doc}") from None
            say(f"[demo] ADD {name}: try again later ({exc.doc.get('details', '')}); "
                f"retrying in {delay:g}s")  # fmt: skip
            node.forget_netns(name)
        sleep(delay)
        delay = min(delay * 2, RETRY_MAX_S)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.rigs.demo",
        description="Run one simulated node (moto_server + metadata server + vpc-ipamd) and "
        "create pods through the CNI plugin.",
    )
    parser.add_argument(
        "--pods", type=int, default=12, help="pods to create (default 12: two ENIs' worth)"
    )
    parser.add_argument("--fake-datapath", action="store_true", help="never touch netlink")
    parser.add_argument(
        "--add-deadline", type=float, default=120.0,
        help="seconds to keep retrying an ADD told to try again later (default 120)",
    )  # fmt: skip
    args = parser.parse_args(argv)

    possible, reason = real_datapath_possible()
    real = possible and not args.fake_datapath
    if not real:
        why = "asked for" if args.fake_datapath else reason
        say(f"[demo] using the fake datapath ({why}); no network namespaces are made")
    say("[demo] starting moto_server, the metadata server and vpc-ipamd ...")
    workdir = ""
    try:
        with local_node(real=real, keep_workdir_on_error=True) as node:
            workdir = node.workdir
            run(node, args)
    except (DemoFailed, CniError, OSError, RuntimeError) as exc:
        say(f"[demo] FAILED: {exc}")
        if workdir:
            say(f"[demo] logs kept in {workdir} (ipamd.log, moto.log, plugin.log)")
        return 1
    say("[demo] stopped everything and cleaned up")
    return 0


def run(node: LocalNode, args: argparse.Namespace) -> None:
    """Pods up, a look at the node, pings, pods down (raises DemoFailed)."""
    say(f"[demo] node {node.instance_id} is up; datapath: {'linux' if node.real else 'fake'}")
    for i in range(args.pods):
        pod = add_like_a_runtime(node, f"pod-{i}", args.add_deadline)
        say(f"[demo] ADD pod-{i}: {pod.ip}")
    for event, link in node.hotplug.events if node.hotplug else ():
        say(f"[demo] hypervisor: {event} {link.link} ({link.mac}) for {link.eni_id}")
    say("\n$ ipamctl enis\n" + node.ipamctl("enis"))
    say("$ ipamctl pods\n" + node.ipamctl("pods"))
    say("$ ipamctl stats\n" + node.ipamctl("stats"))
    if node.real and len(node.pods) >= 2:
        pods = list(node.pods.values())
        for first, second in ((pods[0], pods[1]), (pods[-1], pods[0])):
            ok = node.ping(first, second.ip)
            say(f"[demo] ping {first.name} -> {second.name} ({second.ip}): "
                f"{'ok' if ok else 'FAILED'}")  # fmt: skip
            if not ok:
                raise DemoFailed(f"ping {first.name} -> {second.name} ({second.ip}) failed")
    for name in list(node.pods):
        node.del_pod(name)
        say(f"[demo] DEL {name}")
    say("$ ipamctl stats\n" + node.ipamctl("stats"))


if __name__ == "__main__":
    sys.exit(main())
