"""The main job on an embedded default: a simulated node against a local moto server.

``./dev demo`` (or ``python -m adapters.demo``) starts moto_server on loopback, the metadata
server, and vpc-ipamd with the EC2 backend; creates a few pods through the CNI plugin; shows
``ipamctl enis``, ``ipamctl pods`` and ``ipamctl stats``; pings between pods when the datapath
is real; then deletes the pods and cleans everything up. Without root it says so and uses the
fake datapath. The node is an m5.large (3 ENIs x 10 addresses): the default 12 pods need a
second ENI, which the harness hot-plugs into the node namespace as EC2's hypervisor would.
"""

from __future__ import annotations

import argparse
import sys

from adapters.localnode import local_node, real_datapath_possible


def say(text: str) -> None:
    print(text, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m adapters.demo",
        description="Run one simulated node (moto_server + metadata server + vpc-ipamd) and "
        "create pods through the CNI plugin.",
    )
    parser.add_argument(
        "--pods", type=int, default=12, help="pods to create (default 12: two ENIs' worth)"
    )
    parser.add_argument("--fake-datapath", action="store_true", help="never touch netlink")
    args = parser.parse_args(argv)

    possible, reason = real_datapath_possible()
    real = possible and not args.fake_datapath
    if not real:
        why = "asked for" if args.fake_datapath else reason
        say(f"[demo] using the fake datapath ({why}); no network namespaces are made")
    say("[demo] starting moto_server, the metadata server and vpc-ipamd ...")
    with local_node(real=real) as node:
        say(f"[demo] node {node.instance_id} is up; datapath: {'linux' if node.real else 'fake'}")
        for i in range(args.pods):
            pod = node.add_pod(f"pod-{i}")
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
        for name in list(node.pods):
            node.del_pod(name)
            say(f"[demo] DEL {name}")
        say("$ ipamctl stats\n" + node.ipamctl("stats"))
    say("[demo] stopped everything and cleaned up")
    return 0


if __name__ == "__main__":
    sys.exit(main())
