"""``vpc-ipamd``: the node agent's entry point.

Exit codes: 0 after an orderly stop (SIGTERM, SIGINT or SIGHUP, during the start too), 1 when
start fails (another daemon holds the state directory's lock, say), 2 for a bad setting (the
message names the variable and what it accepts).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import os
import resource
import signal
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from adapters.ipamd.clock import SystemClock
from adapters.ipamd.daemon import Daemon, fan_out
from adapters.ipamd.logs import LoopErrorLog, make_logger, secret_values
from adapters.ipamd.settings import Settings, SettingsError, load_settings
from adapters.ipamd.statelock import StateDirLocked, lock_state_dir
from adapters.ipamd.wiring import build_ports
from adapters.metrics import Metrics
from backends.observe import CallCounter
from backends.steps import Step, no_step

WORKER_THREADS = 32
# Each asks for an orderly stop (requests in flight finish, checkpoint written, socket
# removed): SIGHUP too, which a closed terminal or a supervisor may send.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
OPEN_FILES_WANTED = 65536


def raise_open_file_limit(log: Any) -> None:
    """Raise the soft open-file limit to the hard one (at most OPEN_FILES_WANTED): the
    default 1024 let idle HTTP connections use up the descriptors every ADD needs."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = OPEN_FILES_WANTED if hard == resource.RLIM_INFINITY else min(hard, OPEN_FILES_WANTED)
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        except (OSError, ValueError) as exc:
            log.warning("cannot raise the open-file limit", soft=soft, error=str(exc))

EPILOG = """\
configuration comes from the environment (upstream's variable names), e.g.:
  WARM_ENI_TARGET=1 WARM_IP_TARGET= MINIMUM_IP_TARGET= WARM_PREFIX_TARGET=1
  ENABLE_PREFIX_DELEGATION=false MAX_ENI= IP_COOLDOWN_PERIOD=30
  AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG=false ENI_CONFIG_SUBNET=subnet-...
  ENI_CONFIG_SECURITY_GROUPS=sg-..,sg-..   (custom networking without Kubernetes)
  MY_NODE_NAME= MY_POD_NAME= MY_POD_NAMESPACE=kube-system KUBECONFIG= CLUSTER_ENDPOINT=
  ANNOTATE_POD_IP=false ENABLE_POD_ENI=false ENI_CONFIG_LABEL_DEF= ENI_CONFIG_ANNOTATION_DEF=
  IPAMD_KUBE_START_WAIT_SECONDS=30   (Kubernetes: the node's ENIConfig, pod-ips, Events)
  ENABLE_SUBNET_DISCOVERY=true CLUSTER_NAME= ADDITIONAL_ENI_TAGS='{"k":"v"}'
  AWS_VPC_ENI_MTU=9001 POD_MTU=9001 AWS_VPC_K8S_CNI_VETHPREFIX=eni
  AWS_VPC_K8S_CNI_EXTERNALSNAT=false
  AWS_VPC_K8S_CNI_BACKING_STORE=/var/run/aws-node/ipam.json IPAMD_SOCKET=/var/run/aws-node/ipam.sock
  IPAMD_PENDING_DEL_DIR=/var/run/aws-node/pending-del IPAMD_SOCKET_ALLOWED_UIDS=1000,1001
  INTROSPECTION_BIND_ADDRESS=127.0.0.1:61679 INTROSPECTION_ALLOW_NON_LOOPBACK=false
  METRICS_BIND_ADDRESS=:61678 DISABLE_INTROSPECTION=false DISABLE_METRICS=false
  DISABLE_LEAKED_ENI_CLEANUP=false ENI_DELETE_ON_TERMINATION=true
  AWS_VPC_K8S_CNI_LOGLEVEL=INFO IPAMD_LOG_FORMAT=auto|json|text
  AWS_REGION= AWS_EC2_ENDPOINT= AWS_EC2_METADATA_SERVICE_ENDPOINT=http://169.254.169.254
  IPAMD_CLOUD=aws|fake IPAMD_DATAPATH=linux|fake IPAMD_ADD_WAIT_SECONDS=5
exit codes: 0 stopped by SIGTERM/SIGINT/SIGHUP, 1 start failed, 2 bad setting
"""


async def run(settings: Settings, env: Mapping[str, str], step: Step = no_step) -> int:
    log = make_logger(settings.log_level, settings.log_json, secrets=secret_values(env))
    asyncio.get_running_loop().set_exception_handler(LoopErrorLog(log))
    stop = asyncio.Event()
    for sig in STOP_SIGNALS:  # from the first moment: a stop signal is never ignored
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    try:  # before anything in the state directory is touched
        lock_state_dir(os.path.dirname(settings.checkpoint_path))
    except (StateDirLocked, OSError) as exc:
        log.error("cannot lock the state directory", error=str(exc))
        return 1
    raise_open_file_limit(log)
    # Datapath, cloud and checkpoint calls all run in worker threads: room for a burst of pods.
    asyncio.get_running_loop().set_default_executor(
        concurrent.futures.ThreadPoolExecutor(WORKER_THREADS, thread_name_prefix="ipamd")
    )
    log.info("starting", settings=settings.public())
    clock = SystemClock()
    metrics, calls = Metrics(), CallCounter()
    observer = fan_out(calls, metrics)
    try:
        ports = await asyncio.to_thread(build_ports, settings, observer, clock.now, step)
    except Exception as exc:
        log.error("cannot build backends", error=f"{type(exc).__name__}: {exc}")
        return 1
    daemon = Daemon(settings, ports, clock, log, env=env, metrics=metrics, calls=calls)
    starting = asyncio.ensure_future(daemon.start())
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():  # a stop signal during the start: give up the start, stop
        log.info("stop signal during start")
        starting.cancel()
        with contextlib.suppress(BaseException):
            await starting
        await daemon.server.stop()
        if daemon.kube is not None:  # perhaps still waiting for the API server
            await daemon.kube.stop()
        return 0
    stopping.cancel()
    if starting.exception() is not None:
        exc = starting.exception()
        log.error("start failed", error=f"{type(exc).__name__}: {exc}")
        await daemon.server.stop()
        if daemon.kube is not None:
            await daemon.kube.stop()
        return 1
    await stop.wait()
    try:
        await daemon.stop()
    except Exception:
        return 1
    return 0


def main(
    argv: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    step: Step = no_step,
) -> int:
    """The ``vpc-ipamd`` command; ``step`` is the step hook (:mod:`backends.steps`)."""
    parser = argparse.ArgumentParser(
        prog="vpc-ipamd",
        description="Node agent of the VPC CNI: keeps a warm pool of VPC addresses and "
        "serves the CNI plugin over a Unix socket.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--check-config", action="store_true", help="validate the environment and exit"
    )
    args = parser.parse_args(argv)
    environ = dict(os.environ if env is None else env)
    try:
        settings = load_settings(environ)
    except SettingsError as exc:
        print(f"vpc-ipamd: bad setting: {exc}", file=sys.stderr)
        return 2
    if args.check_config:
        print("configuration ok")
        return 0
    return asyncio.run(run(settings, environ, step))


if __name__ == "__main__":
    sys.exit(main())
