"""An in-process vpc-ipamd for tests: FakeCloud + auto fake datapath + a real checkpoint file,
on a VirtualClock (timers never sleep for real)."""

from __future__ import annotations

import asyncio
import io
import os
import random
import shutil
import tempfile
import threading
import time
from collections.abc import Mapping
from typing import Any

import attrs

from adapters import protocol as p
from adapters.ipamd.clock import VirtualClock, settle_loop
from adapters.ipamd.daemon import Daemon, fan_out
from adapters.ipamd.executor import NodeExecutor, Ports
from adapters.ipamd.logs import make_logger
from adapters.ipamd.settings import Settings, load_settings, state_env
from adapters.ipamd.wiring import AutoFakeDatapath, LockedCloud, LockedMetadata
from adapters.metrics import Metrics
from backends.checkpoint import JsonFileCheckpointStore
from backends.fakecloud import FakeCloud
from backends.observe import CallCounter

NETNS = "/var/run/netns/cni-{}"


def base_env(state_dir: str, **extra: str) -> dict[str, str]:
    env = {
        **state_env(state_dir),
        "INTROSPECTION_BIND_ADDRESS": "127.0.0.1:0",
        "METRICS_BIND_ADDRESS": "127.0.0.1:0",
        "IPAMD_CLOUD": "fake",
        "IPAMD_DATAPATH": "fake",
        "AWS_VPC_K8S_CNI_LOGLEVEL": "DEBUG",
    }
    env.update(extra)
    return env


@attrs.define
class World:
    """One fake account shared by daemon restarts (the node outlives the daemon)."""

    clock: VirtualClock
    cloud: FakeCloud
    instance_id: str
    subnet_id: str
    datapath: AutoFakeDatapath
    state_dir: str
    log_stream: io.StringIO = attrs.field(factory=io.StringIO)

    @classmethod
    def create(cls, instance_type: str = "m5.large") -> World:
        clock = VirtualClock()
        cloud = FakeCloud(throttling=False, clock=clock.now)
        subnet = cloud.add_subnet("10.0.0.0/20")
        instance = cloud.launch_instance(instance_type, subnet)
        state_dir = tempfile.mkdtemp(prefix="ipamd-", dir="/tmp")  # short: AF_UNIX path limit
        return cls(clock, cloud, instance, subnet, AutoFakeDatapath(), state_dir)

    def cleanup(self) -> None:
        shutil.rmtree(self.state_dir, ignore_errors=True)

    def settings(self, **env: str) -> Settings:
        return load_settings(base_env(self.state_dir, **env))

    @property
    def socket_path(self) -> str:
        return os.path.join(self.state_dir, "ipam.sock")

    @property
    def checkpoint_path(self) -> str:
        return os.path.join(self.state_dir, "ipam.json")

    def daemon(self, settings: Settings | None = None, store: Any = None, **env: str) -> Daemon:
        settings = settings or self.settings(**env)
        metrics, calls = Metrics(), CallCounter()
        observer = fan_out(calls, metrics)
        cloud = LockedCloud(
            self.cloud.port(
                self.instance_id, observer, cluster_name=settings.cluster_name,
                delete_on_termination=settings.eni_delete_on_termination,
            )
        )  # fmt: skip
        metadata = LockedMetadata(self.cloud.metadata(self.instance_id), cloud._lock)
        store = store or JsonFileCheckpointStore(settings.checkpoint_path, clock=self.clock.now)
        ports = Ports(cloud=cloud, metadata=metadata, datapath=self.datapath, store=store)
        log = make_logger("DEBUG", json=True, stream=self.log_stream)
        return Daemon(
            settings, ports, self.clock, log, env=base_env(self.state_dir, **env),
            metrics=metrics, rng=random.Random(7), calls=calls,
        )  # fmt: skip


def add_request(n: int, **kw: Any) -> p.Request:
    fields: dict[str, Any] = {
        "network_name": "aws-cni",
        "container_id": f"c{n:04d}",
        "if_name": "eth0",
        "netns": NETNS.format(n),
        "pod_namespace": "default",
        "pod_name": f"pod-{n}",
    }
    fields.update(kw)
    return p.Request(p.OP_ADD, **fields)


def del_request(n: int, **kw: Any) -> p.Request:
    fields: dict[str, Any] = {
        "network_name": "aws-cni", "container_id": f"c{n:04d}", "if_name": "eth0",
    }  # fmt: skip
    fields.update(kw)
    return p.Request(p.OP_DEL, **fields)


async def call(sock: str, req: p.Request, timeout: float = 10.0) -> p.Reply:
    """The protocol's own blocking client, in a thread of its own (not the loop's default
    executor: many blocked clients there would starve the daemon's own worker threads)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[p.Reply] = loop.create_future()

    def run() -> None:
        try:
            reply = p.request(sock, req, timeout)
        except BaseException as exc:
            loop.call_soon_threadsafe(_settle, future, None, exc)
        else:
            loop.call_soon_threadsafe(_settle, future, reply, None)

    threading.Thread(target=run, daemon=True).start()
    return await future


def _settle(future: asyncio.Future[Any], value: Any, exc: BaseException | None) -> None:
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(value)


async def eventually(predicate: Any, timeout: float = 5.0) -> None:
    """Wait (real time, polling) for work done in worker threads; not a timer."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.002)


async def raw_call(sock: str, data: bytes, shut: bool = True) -> bytes:
    """Send raw bytes, half-close, read the whole reply."""
    reader, writer = await asyncio.open_unix_connection(sock)
    writer.write(data)
    await writer.drain()
    if shut:
        writer.write_eof()
    reply = await reader.read()
    writer.close()
    return reply


async def until(predicate: Any, clock: VirtualClock, step: float = 1.0, limit: int = 60) -> None:
    """Advance virtual time step by step until ``predicate()`` holds."""
    for _ in range(limit):
        if predicate():
            return
        await clock.advance(step)
        await settle_loop()
        await asyncio.sleep(0.002)  # let worker threads (cloud, datapath) finish
    assert predicate(), "condition not reached in virtual time"


def logs(world: World) -> str:
    return world.log_stream.getvalue()


def core(daemon: Daemon) -> NodeExecutor:
    return daemon.executor


def env_for(world: World, **extra: str) -> Mapping[str, str]:
    return base_env(world.state_dir, **extra)
