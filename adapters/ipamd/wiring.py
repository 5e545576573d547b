"""The daemon's composition root, part two: Settings -> backends (the ports).

``IPAMD_CLOUD=aws`` uses EC2 over boto3 (``AWS_EC2_ENDPOINT``) and IMDSv2
(``AWS_EC2_METADATA_SERVICE_ENDPOINT``); ``IPAMD_CLOUD=fake`` an in-memory FakeCloud with one
instance of ``IPAMD_FAKE_INSTANCE_TYPE`` (demo, benchmark, subprocess tests); with
``IPAMD_FAKE_LATENCY=realistic`` its calls take their realistic time in worker threads, in
parallel (each action is atomic in the FakeCloud; the core reserves device indexes), and its
metadata lags; ``IPAMD_FAKE_CALL_LOG`` records every call as a JSON line.
``IPAMD_DATAPATH=linux`` uses pyroute2; ``fake`` an in-memory datapath that creates pod
namespaces and ENI links on demand (nothing real exists to find).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from adapters.ipamd.executor import Ports
from adapters.ipamd.settings import Settings
from backends.checkpoint import JournalCheckpointStore, JsonFileCheckpointStore
from backends.datapath.fake import FakeDatapath
from backends.observe import CallObserver, CallRecord
from backends.steps import Step, no_step
from ipamcore.effects import CreateEni
from ipamcore.limits import InstanceLimits
from ipamcore.model import InstanceIdentity, ObservedEni, Subnet
from ipamcore.netspec import EniNetwork, PodNetwork
from ipamcore.ports import CheckpointStore


class AutoFakeDatapath(FakeDatapath):
    """FakeDatapath that creates a pod's netns and an ENI's host link when first used."""

    def __init__(self) -> None:
        super().__init__()
        self._removed: set[str] = set()

    def setup_eni(self, eni: EniNetwork) -> None:
        with self._lock:
            if not any(link.mac == eni.mac.lower() for link in self.links.values()):
                self.add_link(f"ens{len(self.links) + 5}", eni.mac)
        super().setup_eni(eni)

    def setup_pod(self, pod: PodNetwork) -> None:
        self.add_netns(pod.netns_path)
        super().setup_pod(pod)

    def remove_netns(self, path: str) -> None:
        with self._lock:
            self._removed.add(path)
            super().remove_netns(path)

    def pod_present(self, netns_path: str, host_veth: str, ipv4: str | None = None) -> bool:
        """A namespace it never saw is assumed present: namespaces are made on demand, so a
        restarted daemon process has nothing real to look for (and must not drop the
        allocations it restores); one removed (a test's dead pod) is gone."""
        with self._lock:
            if netns_path not in self.namespaces and netns_path not in self._removed:
                return True
        return super().pod_present(netns_path, host_veth, ipv4)


class LockedCloud:
    """Serialises calls to a cloud port that is not thread-safe (the FakeCloud)."""

    def __init__(self, cloud: Any) -> None:
        self._cloud = cloud
        self._lock = threading.Lock()

    def _locked(self, fn: Callable[..., Any], *args: Any) -> Any:
        with self._lock:
            return fn(*args)

    def describe_enis(self, instance_id: str) -> list[ObservedEni]:
        return self._locked(self._cloud.describe_enis, instance_id)  # type: ignore[no-any-return]

    def describe_subnets(self, subnet_ids: Sequence[str] = (), tag_key: str = "") -> list[Subnet]:
        return self._locked(self._cloud.describe_subnets, subnet_ids, tag_key)  # type: ignore[no-any-return]

    def create_eni(
        self, instance_id: str, effect: CreateEni, tags: Mapping[str, str] | None = None
    ) -> ObservedEni:
        return self._locked(self._cloud.create_eni, instance_id, effect, tags)  # type: ignore[no-any-return]

    def assign_ipv4(self, eni_id: str, count: int) -> tuple[str, ...]:
        return self._locked(self._cloud.assign_ipv4, eni_id, count)  # type: ignore[no-any-return]

    def assign_prefixes(self, eni_id: str, count: int) -> tuple[str, ...]:
        return self._locked(self._cloud.assign_prefixes, eni_id, count)  # type: ignore[no-any-return]

    def assign_ipv6_prefixes(self, eni_id: str, count: int) -> tuple[str, ...]:
        return self._locked(self._cloud.assign_ipv6_prefixes, eni_id, count)  # type: ignore[no-any-return]

    def unassign_ipv4(self, eni_id: str, addresses: Sequence[str]) -> None:
        self._locked(self._cloud.unassign_ipv4, eni_id, addresses)

    def unassign_prefixes(self, eni_id: str, prefixes: Sequence[str]) -> None:
        self._locked(self._cloud.unassign_prefixes, eni_id, prefixes)

    def free_eni(self, eni_id: str) -> None:
        self._locked(self._cloud.free_eni, eni_id)

    def find_leaked_enis(
        self,
        instance_id: str,
        now: float,
        any_instance: bool = False,
        min_age_s: float | None = 300.0,
    ) -> list[str]:
        return self._locked(  # type: ignore[no-any-return]
            self._cloud.find_leaked_enis, instance_id, now, any_instance, min_age_s
        )

    def describe_instance_type(self, instance_type: str) -> InstanceLimits:
        return self._locked(self._cloud.describe_instance_type, instance_type)  # type: ignore[no-any-return]


class LockedMetadata:
    def __init__(self, metadata: Any, lock: threading.Lock) -> None:
        self._metadata = metadata
        self._lock = lock

    def identity(self) -> InstanceIdentity:
        with self._lock:
            return self._metadata.identity()  # type: ignore[no-any-return]

    def enis(self) -> list[ObservedEni]:
        with self._lock:
            return self._metadata.enis()  # type: ignore[no-any-return]


class CallLog:
    """A CallObserver appending one JSON line per call to a file (benchmarks read it)."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._lock = threading.Lock()

    def __call__(self, record: CallRecord) -> None:
        line = json.dumps(
            {"action": record.action, "target": record.target, "outcome": record.outcome,
             "latency_s": record.latency_s, "at": time.time()}
        )  # fmt: skip
        with self._lock, open(self._path, "a", encoding="utf-8") as f:
            f.write(line + "\n")


FAKE_SUBNET_IPV6_CIDR = "2600:1f14:a0c:ce01::/64"


def fake_cloud_ports(
    instance_type: str,
    observer: CallObserver,
    clock: Callable[[], float],
    latency: str = "none",
    call_log: str = "",
    cluster_name: str = "",
    delete_on_termination: bool = True,
) -> tuple[Any, Any, Any]:
    """(cloud port, metadata port, FakeCloud) of a fresh one-instance fake account."""
    from backends.fakecloud import FakeCloud
    from backends.fakecloud.latency import use_realistic_latency

    realistic = latency == "realistic"
    fake = FakeCloud(throttling=False, clock=clock, sleep=time.sleep if realistic else None)
    if call_log:
        fake.observers.append(CallLog(call_log))
    # IPv6 too (its /64 from the VPC's /56), so ENABLE_IPv6 works with no other setting.
    subnet = fake.add_subnet("10.0.0.0/17", ipv6_cidr=FAKE_SUBNET_IPV6_CIDR)
    instance = fake.launch_instance(instance_type, subnet)
    port = fake.port(
        instance, observer, cluster_name=cluster_name, delete_on_termination=delete_on_termination
    )
    if realistic:
        use_realistic_latency(fake)
        return port, fake.metadata(instance), fake
    cloud = LockedCloud(port)
    metadata = LockedMetadata(fake.metadata(instance), cloud._lock)
    return cloud, metadata, fake


def build_ports(
    settings: Settings,
    observer: CallObserver,
    clock: Callable[[], float],
    step: Step = no_step,
) -> Ports:
    """The backends ``settings`` select; ``step`` is called after each step of a checkpoint
    write and of an ENI creation (:mod:`backends.steps`; a no-op but in crash tests)."""
    crash = step
    datapath: Any
    if settings.datapath == "fake":
        datapath = AutoFakeDatapath()
    else:
        from backends.datapath.linux import LinuxDatapath

        datapath = LinuxDatapath(host_netns=settings.host_netns)
    if settings.cloud == "fake":
        cloud, metadata, _ = fake_cloud_ports(
            settings.fake_instance_type, observer, clock, settings.fake_latency,
            settings.fake_call_log, settings.cluster_name, settings.eni_delete_on_termination,
        )  # fmt: skip
    else:
        from backends.aws.client import Ec2Config
        from backends.aws.ec2 import Ec2Backend
        from backends.aws.imds import ImdsClient

        metadata = ImdsClient(settings.metadata_endpoint)
        region = settings.region or metadata.identity().region
        config = Ec2Config(
            region=region,
            endpoint_url=settings.ec2_endpoint,
            cluster_name=settings.cluster_name,
            extra_tags=dict(settings.additional_eni_tags),
            delete_on_termination=settings.eni_delete_on_termination,
        )
        cloud = Ec2Backend(config, observer=observer, step=crash)
    store: CheckpointStore
    if settings.checkpoint_journal:
        store = JournalCheckpointStore(settings.checkpoint_path, clock=clock, step=crash)
    else:
        store = JsonFileCheckpointStore(settings.checkpoint_path, clock=clock, step=crash)
    return Ports(cloud=cloud, metadata=metadata, datapath=datapath, store=store, crash=crash)
