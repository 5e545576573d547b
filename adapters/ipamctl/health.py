"""``ipamctl health``: the exec liveness and readiness probe of the aws-node container.

Upstream probes ipamd with ``grpc-health-probe -addr=:50051``; this asks ipamd over its
socket (``status``, one JSON line each way) and exits 0 when it answers well:

- liveness (no option): ipamd answers on its socket;
- ``--ready``: and it says it is ready (its pool was built from EC2 and the checkpoint);
- ``--ready-min-ips N``: and the node holds at least N addresses (upstream #1724: a node
  reported Ready before it had any). ``--ready-min-ips MINIMUM_IP_TARGET`` takes N from that
  variable in the container's environment (0 when unset): an exec probe runs no shell, so
  the name is spelled out rather than ``$MINIMUM_IP_TARGET``. ``HEALTH_READY_MIN_IPS`` (a
  count or ``MINIMUM_IP_TARGET``) sets the same from the environment.

Exit codes: 0 healthy; 1 not (a line on stderr says why); 2 usage. Kept cheap for a probe
that runs every few seconds: the standard library and :mod:`adapters.protocol` only (no
argparse, no ipamctl parser), see :func:`main`.
"""

from __future__ import annotations

import os
import sys

from adapters import protocol as p

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

USAGE = (
    "usage: ipamctl health [--socket PATH] [--timeout SECONDS] [--ready]"
    " [--ready-min-ips N|MINIMUM_IP_TARGET] [--quiet]\n"
)
MIN_IPS_ENV = "HEALTH_READY_MIN_IPS"


class Usage(Exception):
    pass


def _min_ips(raw: str, env: Mapping[str, str]) -> int:
    value = raw.strip()
    if value.upper() == "MINIMUM_IP_TARGET":
        value = env.get("MINIMUM_IP_TARGET", "").strip() or "0"
    if not value.isdigit():
        raise Usage(f"--ready-min-ips: expected a count or MINIMUM_IP_TARGET, got {raw!r}")
    return int(value)


def parse(argv: Sequence[str], env: Mapping[str, str]) -> dict[str, object]:
    opts: dict[str, object] = {
        "socket": env.get("IPAMD_SOCKET") or p.DEFAULT_SOCKET_PATH,
        "timeout": 5.0,
        "ready": False,
        "min_ips": 0,
        "quiet": False,
    }
    if env.get(MIN_IPS_ENV, "").strip():
        opts["min_ips"] = _min_ips(env[MIN_IPS_ENV], env)
        opts["ready"] = True
    args = list(argv)
    while args:
        arg = args.pop(0)
        name, eq, inline = arg.partition("=")
        if name in ("--socket", "--timeout", "--ready-min-ips"):
            if not eq:
                if not args:
                    raise Usage(f"{name} needs a value")
                inline = args.pop(0)
            if name == "--socket":
                opts["socket"] = inline
            elif name == "--timeout":
                try:
                    opts["timeout"] = float(inline)
                except ValueError:
                    raise Usage(f"--timeout: expected seconds, got {inline!r}") from None
            else:
                opts["min_ips"] = _min_ips(inline, env)
                opts["ready"] = True
        elif arg == "--ready":
            opts["ready"] = True
        elif arg in ("-q", "--quiet"):
            opts["quiet"] = True
        elif arg in ("-h", "--help"):
            raise Usage("")
        else:
            raise Usage(f"unknown argument {arg!r}")
    return opts


def check(
    sock: str, timeout: float, ready: bool = False, min_ips: int = 0
) -> tuple[bool, str, dict[str, object]]:
    """(healthy, why, ipamd's status figures)."""
    try:
        reply = p.request(sock, p.Request(p.OP_STATUS), timeout)
    except p.ProtocolError as exc:
        return False, f"ipamd does not answer: {exc.message}", {}
    if not reply.ok:
        return False, f"ipamd answered {reply.error_code}: {reply.error_message}", {}
    status = dict(reply.result or {})
    if ready and status.get("ready") is False:
        return False, "ipamd is not ready yet", status
    total = status.get("total", 0)
    if min_ips and (not isinstance(total, int) or total < min_ips):
        return False, f"{total} addresses on the node, waiting for {min_ips}", status
    return True, "ok", status


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    environ = os.environ if env is None else env
    try:
        opts = parse(sys.argv[2:] if argv is None else argv, environ)
    except Usage as exc:
        sys.stderr.write((f"ipamctl health: {exc}\n" if str(exc) else "") + USAGE)
        return 2 if str(exc) else 0
    healthy, why, status = check(
        str(opts["socket"]), float(opts["timeout"]),  # type: ignore[arg-type]
        bool(opts["ready"]), int(opts["min_ips"]),  # type: ignore[call-overload]
    )  # fmt: skip
    if not healthy:
        sys.stderr.write(f"ipamctl health: {why}\n")
        return 1
    if not opts["quiet"]:
        figures = " ".join(f"{k}={status[k]}" for k in ("total", "assigned", "available")
                           if k in status)  # fmt: skip
        sys.stdout.write(f"ok {figures}".rstrip() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
