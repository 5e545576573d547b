"""Crash injection against a real ``vpc-ipamd`` process, restarted after every kill.

The node is :func:`tests.rigs.localnode.local_node` without root: ``moto_server`` holds the
cloud (so ENIs, attachments and addresses survive the daemon, as EC2 does), the project's
metadata server, the daemon with the EC2 backend over HTTP, the fake datapath and a real
checkpoint file. Clients speak the plugin's socket protocol directly (no plugin process per
request), and a :class:`~tests.rigs.reliability.invariants.Ledger` records what they were
told.

* :func:`random_kills`: worker threads run mixed ADD/DEL while the daemon's policy (every
  0.2 s, ``WARM_IP_TARGET=2``: addresses and ENIs come and go) and reconciliation (every
  second) run; after a seeded random moment the daemon is SIGKILLed and restarted; then the
  invariants are checked, what was in doubt is DELeted as the runtime would, and checked
  again.
* :func:`checkpoint_step_kill`: the daemon kills itself at one step of a checkpoint write
  (``IPAMD_CRASH_POINT``) during an ADD or a DEL; whether the request survived must match the
  step (before the rename: the old file; from the rename on: the new one).
* :func:`eni_step_kill`: the daemon kills itself at one step of creating an ENI; after the
  restart the ENI is adopted (attached) or deleted (not attached), never left behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import statistics
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import attrs
import boto3  # type: ignore[import-untyped]

from adapters import protocol as p
from backends.steps import CHECKPOINT_STEPS, JOURNAL_STEPS
from ipamcore.model import INSTANCE_ID_TAG
from tests.rigs.localnode import REGION, LocalNode, local_node
from tests.rigs.reliability.invariants import Ledger, Violation

NETWORK = "aws-cni"
NAMESPACE = "crash"
REQUEST_TIMEOUT_S = 10.0
SETTLE_S = 8.0  # how long ENI checks may wait for the policy to finish a change

Progress = Callable[[str], None]


def node_env(cooldown_s: int) -> dict[str, str]:
    """The daemon's settings for crash runs (on top of local_node's)."""
    return {
        "MAX_ENI": "3",
        "WARM_ENI_TARGET": "0",
        "WARM_IP_TARGET": "2",
        "IP_COOLDOWN_PERIOD": str(cooldown_s),
        "IPAMD_POLICY_INTERVAL_SECONDS": "0.2",
        "IPAMD_RECONCILE_INTERVAL_SECONDS": "1",
        "IPAMD_ADD_WAIT_SECONDS": "1",
        "DISABLE_LEAKED_ENI_CLEANUP": "false",
        "DISABLE_METRICS": "true",
    }


@contextlib.contextmanager
def crash_node(
    cooldown_s: int = 8,
    extra_env: Mapping[str, str] | None = None,
    instance_type: str = "m5.large",
) -> Iterator[LocalNode]:
    """A local node (fake datapath, moto cloud) set up for crash runs."""
    env = {**node_env(cooldown_s), **(extra_env or {})}
    with local_node(real=False, extra_env=env, instance_type=instance_type) as node:
        yield node


# ------------------------------------------------------------------------ observing


def daemon_pods(node: LocalNode) -> dict[str, str]:
    """pod name (= the campaign's key) -> address, from the daemon's introspection."""
    doc = _get_json(node.introspection_url + "/v1/pods")
    return {str(row["Name"]): str(row["IP"]) for row in doc.values()}


def daemon_enis(node: LocalNode) -> list[str]:
    return list(_get_json(node.introspection_url + "/v1/enis")["ENIs"])


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as reply:
        return json.loads(reply.read())


def ec2_client(node: LocalNode) -> Any:
    return boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
    ).client("ec2", endpoint_url=node.moto_url)


def cloud_enis(ec2: Any, instance_id: str) -> tuple[list[str], list[str]]:
    """(ENIs attached to the instance, available ENIs tagged for it) as EC2 says."""
    attached = ec2.describe_network_interfaces(
        Filters=[{"Name": "attachment.instance-id", "Values": [instance_id]}]
    )["NetworkInterfaces"]
    tagged = ec2.describe_network_interfaces(
        Filters=[
            {"Name": f"tag:{INSTANCE_ID_TAG}", "Values": [instance_id]},
            {"Name": "status", "Values": ["available"]},
        ]
    )["NetworkInterfaces"]
    return [e["NetworkInterfaceId"] for e in attached], [e["NetworkInterfaceId"] for e in tagged]


def check_enis(node: LocalNode, ledger: Ledger, ec2: Any, wait_s: float = SETTLE_S) -> None:
    """ENI invariants, retried while the policy may be mid-change; the last try recorded."""
    deadline = time.monotonic() + wait_s
    while True:
        attached, available = cloud_enis(ec2, node.instance_id)
        found = ledger.check_enis(daemon_enis(node), attached, available)
        if not found or time.monotonic() > deadline:
            ledger.record(found)
            return
        time.sleep(0.2)  # polling another process's progress, not a timer under test


# ------------------------------------------------------------------------ requests


def _request(node: LocalNode, op: str, key: str) -> p.Reply:
    req = p.Request(
        op=op, network_name=NETWORK, container_id=key, if_name="eth0",
        netns=f"/var/run/netns/fake-{key}", pod_namespace=NAMESPACE, pod_name=key,
    )  # fmt: skip
    return p.request(node.socket_path, req, timeout=REQUEST_TIMEOUT_S)


def add(node: LocalNode, ledger: Ledger, key: str) -> str | None:
    """ADD ``key``; on an error reply DEL it as the runtime would. The address or None."""
    try:
        reply = _request(node, p.OP_ADD, key)
    except p.ProtocolError:
        ledger.in_doubt_now(key)
        return None
    if reply.ok:
        address = str((reply.result or {})["ipv4"])
        ledger.add_acked(key, address, time.monotonic())
        return address
    ledger.add_failed(key)
    delete(node, ledger, key)
    return None


def delete(node: LocalNode, ledger: Ledger, key: str, address: str | None = None) -> bool:
    ledger.del_sent(key, time.monotonic(), address)
    try:
        reply = _request(node, p.OP_DEL, key)
    except p.ProtocolError:
        ledger.in_doubt_now(key)
        return False
    if reply.ok:
        ledger.del_acked(key)
    return reply.ok


def settle(node: LocalNode, ledger: Ledger) -> list[Violation]:
    """After a restart: check what survived, DEL what was in doubt, check again."""
    before = len(ledger.violations)
    pods = daemon_pods(node)
    ledger.check_restored(pods)
    for key in ledger.doubtful():
        delete(node, ledger, key, pods.get(key))
    ledger.check_settled(daemon_pods(node))
    return ledger.violations[before:]


# ------------------------------------------------------------------------ random kills


@attrs.frozen
class KillReport:
    kills: int
    restart_s: list[float]
    windows_s: list[float]
    violations: list[Violation]


def _worker(
    node: LocalNode, ledger: Ledger, rng: random.Random, prefix: str, stop: threading.Event,
    max_live: int, inherited: list[str],
) -> None:  # fmt: skip
    live = list(inherited)  # pods acknowledged before the last kill: DELs to come
    n = 0
    while not stop.is_set():
        if live and (len(live) >= max_live or rng.random() < 0.45):
            key = live.pop(rng.randrange(len(live)))
            if not delete(node, ledger, key):
                return
        else:
            key = f"{prefix}-{n}"
            n += 1
            if add(node, ledger, key) is not None:
                live.append(key)
            elif key in ledger.doubtful():
                return
        time.sleep(rng.uniform(0.0, 0.02))  # think time between requests


def random_kills(
    node: LocalNode,
    ledger: Ledger,
    kills: int,
    seed: int,
    progress: Progress | None = None,
    workers: int = 3,
    window_s: tuple[float, float] = (0.05, 1.0),
) -> KillReport:
    """``kills`` rounds of: work for a random window, SIGKILL, restart, check, settle."""
    rng = random.Random(seed)
    ec2 = ec2_client(node)
    restart_s: list[float] = []
    windows: list[float] = []
    before = len(ledger.violations)
    for kill in range(kills):
        stop = threading.Event()
        held = sorted(ledger.held)
        threads = [
            threading.Thread(
                target=_worker,
                args=(
                    node,
                    ledger,
                    random.Random(rng.random()),
                    f"k{kill}w{w}",
                    stop,
                    4,
                    held[w::workers],
                ),
                daemon=True,
            )
            for w in range(workers)
        ]
        for t in threads:
            t.start()
        window = rng.uniform(*window_s)
        windows.append(window)
        time.sleep(window)  # the random moment of the kill
        assert node.daemon is not None
        node.stop_daemon(signal.SIGKILL)
        stop.set()
        for t in threads:
            t.join(timeout=REQUEST_TIMEOUT_S + 5)
        began = time.monotonic()
        node.start_daemon()
        restart_s.append(time.monotonic() - began)
        settle(node, ledger)
        checked = time.monotonic()
        check_enis(node, ledger, ec2)
        if progress is not None:
            progress(
                f"kill {kill + 1}/{kills}: window {window:.2f}s, restart "
                f"{restart_s[-1]:.2f}s, checks {time.monotonic() - began - restart_s[-1]:.2f}s "
                f"(ENIs {time.monotonic() - checked:.2f}s), held {len(ledger.held)}, acked "
                f"adds {ledger.adds_acked}, violations {len(ledger.violations) - before}"
            )
    return KillReport(kills, restart_s, windows, ledger.violations[before:])


# ------------------------------------------------------------------------ crash points


@contextlib.contextmanager
def crash_point(node: LocalNode, point: str) -> Iterator[None]:
    """Run the daemon with ``IPAMD_CRASH_POINT=point``; on exit it must have killed itself
    there. The caller restarts it (without the hook)."""
    if node.daemon is not None:
        node.stop_daemon()
    node.env["IPAMD_CRASH_POINT"] = point
    try:
        try:
            node.start_daemon()
        except RuntimeError:
            # It may reach the point (e.g. the policy's first ENI) before it is seen up.
            if node.daemon is None or node.daemon.poll() != -signal.SIGKILL:
                raise
        yield
        assert node.daemon is not None
        code = node.daemon.wait(timeout=60)
        node.daemon = None
        if code != -signal.SIGKILL:
            raise AssertionError(f"the daemon exited {code} before crash point {point}")
    finally:
        node.env.pop("IPAMD_CRASH_POINT", None)
        if node.daemon is not None:
            with contextlib.suppress(Exception):
                node.stop_daemon(signal.SIGKILL)


@attrs.frozen
class StepOutcome:
    """What one checkpoint-step kill left: whether the interrupted request took effect."""

    step: str
    op: str
    survived: bool  # ADD: the key is held after restart; DEL: the key is gone
    stale_temps: list[str]
    violations: list[Violation]


def checkpoint_step_kill(
    node: LocalNode, ledger: Ledger, step: str, op: str, tag: str
) -> StepOutcome:
    """Kill at ``step`` of the checkpoint write of an ADD (``op='ADD'``) or a DEL.

    Writes counted from start: 1 start-up, 2 the first ADD, 3 the request under test.
    """
    before = len(ledger.violations)
    first, second = f"s{tag}-a", f"s{tag}-b"
    # These are the steps of the full-rewrite store (the journal has steps of its own).
    node.env["IPAMD_CHECKPOINT_JOURNAL"] = "false"
    try:
        return _checkpoint_step_kill(node, ledger, step, op, before, first, second)
    finally:
        node.env.pop("IPAMD_CHECKPOINT_JOURNAL", None)


def _checkpoint_step_kill(
    node: LocalNode, ledger: Ledger, step: str, op: str, before: int, first: str, second: str
) -> StepOutcome:
    with crash_point(node, f"{step}:3"):
        if add(node, ledger, first) is None:
            raise AssertionError(f"ADD {first} failed before the crash point")
        if op == p.OP_ADD:
            add(node, ledger, second)
        else:
            delete(node, ledger, first)
    node.start_daemon()
    key = second if op == p.OP_ADD else first
    pods = daemon_pods(node)
    survived = (key in pods) if op == p.OP_ADD else (key not in pods)
    directory = os.path.dirname(node.env["AWS_VPC_K8S_CNI_BACKING_STORE"])
    stale = [n for n in os.listdir(directory) if ".tmp-" in n]
    settle(node, ledger)
    for leftover in (first, second):
        if leftover in ledger.held:
            delete(node, ledger, leftover)
    return StepOutcome(step, op, survived, stale, ledger.violations[before:])


def checkpoint_steps() -> tuple[str, ...]:
    return CHECKPOINT_STEPS


def journal_steps() -> tuple[str, ...]:
    return JOURNAL_STEPS


def journal_step_kill(node: LocalNode, ledger: Ledger, step: str, op: str, tag: str) -> StepOutcome:
    """Kill at ``step`` of the journaled store (``IPAMD_CHECKPOINT_JOURNAL``, the default).

    An append step is hit by the second commit of this run: the request under test (an ADD,
    or the DEL of the first key; a DEL's record is not synced, so ``journal.synced`` is then
    reached by the ADD that follows it), or the first ADD if the start-up wrote a record.
    A compaction step is hit by the orderly stop (SIGTERM) after the requests: the stop
    folds the journal into ipam.json, and is killed there. ``survived`` says whether the
    request under test held after the restart; the ledger's checks are what must hold."""
    before = len(ledger.violations)
    first, second, third = f"j{tag}-a", f"j{tag}-b", f"j{tag}-c"
    compaction = step.startswith("compact.") or step == "journal.reset"
    with crash_point(node, step if compaction else f"{step}:2"):
        add(node, ledger, first)
        if op == p.OP_ADD:
            add(node, ledger, second)
        else:
            delete(node, ledger, first)
        add(node, ledger, third)
        if compaction and node.daemon is not None and node.daemon.poll() is None:
            node.daemon.send_signal(signal.SIGTERM)
    node.start_daemon()
    key = second if op == p.OP_ADD else first
    pods = daemon_pods(node)
    survived = (key in pods) if op == p.OP_ADD else (key not in pods)
    directory = os.path.dirname(node.env["AWS_VPC_K8S_CNI_BACKING_STORE"])
    stale = [n for n in os.listdir(directory) if ".tmp-" in n]
    settle(node, ledger)
    for leftover in (first, second, third):
        if leftover in ledger.held:
            delete(node, ledger, leftover)
    return StepOutcome(step, op, survived, stale, ledger.violations[before:])


@attrs.frozen
class EniOutcome:
    step: str
    left_attached: list[str]  # secondary ENIs attached to the instance when it died
    left_available: list[str]  # ENIs tagged for the instance, not attached, when it died
    adopted: list[str]  # of left_attached, in the restarted daemon's pool
    still_there: list[str]  # of left_available, still in EC2 after the restart
    log: str
    violations: list[Violation]


def eni_step_kill(node: LocalNode, ledger: Ledger, step: str) -> EniOutcome:
    """Kill at ``step`` of an ENI creation, restart, and see what became of the ENIs the
    dead daemon left. ``WARM_ENI_TARGET`` is set one above the secondary ENIs the instance
    has (and ``WARM_IP_TARGET`` unset), so the daemon creates one at once; the node needs
    an instance type with room for another ENI (``MAX_ENI`` unset)."""
    before = len(ledger.violations)
    ec2 = ec2_client(node)
    saved = {name: node.env.get(name) for name in ("WARM_ENI_TARGET", "WARM_IP_TARGET")}
    attached, _ = cloud_enis(ec2, node.instance_id)
    node.env["WARM_ENI_TARGET"] = str(len(attached) + 1)  # an ENI of free addresses more
    node.env["WARM_IP_TARGET"] = ""
    try:
        with crash_point(node, step):
            pass
        attached, available = cloud_enis(ec2, node.instance_id)
        primary = _primary_eni(ec2, node.instance_id)
        log_from = _log_size(node)
        node.start_daemon()
        pool = set(daemon_enis(node))
        log = _log_since(node, log_from)
        _now_attached, now_available = cloud_enis(ec2, node.instance_id)
        existing = _existing(ec2, available)
        check_enis(node, ledger, ec2)
        settle(node, ledger)
    finally:
        for name, value in saved.items():
            if value is None:
                node.env.pop(name, None)
            else:
                node.env[name] = value
    secondaries = sorted(e for e in attached if e != primary)
    return EniOutcome(
        step=step,
        left_attached=secondaries,
        left_available=sorted(available),
        adopted=sorted(e for e in secondaries if e in pool),
        still_there=sorted(set(existing) | (set(now_available) & set(available))),
        log=log,
        violations=ledger.violations[before:],
    )


def _primary_eni(ec2: Any, instance_id: str) -> str:
    found = ec2.describe_network_interfaces(
        Filters=[{"Name": "attachment.instance-id", "Values": [instance_id]}]
    )["NetworkInterfaces"]
    for eni in found:
        if int((eni.get("Attachment") or {}).get("DeviceIndex", -1)) == 0:
            return str(eni["NetworkInterfaceId"])
    return ""


def _existing(ec2: Any, eni_ids: list[str]) -> list[str]:
    """Which of ``eni_ids`` EC2 still has."""
    alive = []
    for eni_id in eni_ids:
        try:
            ec2.describe_network_interfaces(NetworkInterfaceIds=[eni_id])
        except Exception:
            continue
        alive.append(eni_id)
    return alive


def _log_path(node: LocalNode) -> str:
    return os.path.join(node.workdir, "ipamd.log")


def _log_size(node: LocalNode) -> int:
    try:
        return os.path.getsize(_log_path(node))
    except FileNotFoundError:
        return 0


def _log_since(node: LocalNode, offset: int) -> str:
    with open(_log_path(node), "rb") as f:
        f.seek(offset)
        return f.read().decode(errors="replace")


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0
