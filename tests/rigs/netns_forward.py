"""TCP ports of this machine's loopback, reachable on a network namespace's loopback.

A node network namespace stands in for an EC2 instance's host network; the services the
node reaches (the fake API server, EC2, instance metadata) run on this machine's loopback,
which a process in the namespace cannot reach. This forwarder listens on ``127.0.0.1:PORT``
*inside* the namespace (its listening sockets are made there, after ``setns``) and relays each
connection to ``127.0.0.1:PORT`` of the namespace it was started in, so a container run with
``--network ns:/run/netns/NODE`` uses the same URLs as the test process. A service that is
down (the fake API server's outage) is seen from the node as a refused or cut connection.

CLI (root): ``python -m tests.rigs.netns_forward --netns /run/netns/NODE PORT...``; prints
``READY`` once every port listens in the namespace, runs until terminated.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import socket
import sys
import threading
from collections.abc import Sequence

CLONE_NEWNET = 0x40000000


def setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def listeners_in(netns_path: str, ports: Sequence[int]) -> list[socket.socket]:
    """Listening sockets on 127.0.0.1:port inside ``netns_path`` (the calling thread goes
    back to its own namespace before returning)."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(netns_path, os.O_RDONLY)
    try:
        setns(target)
        try:
            out = []
            for port in ports:
                s = socket.socket()
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("127.0.0.1", port))
                s.listen(64)
                out.append(s)
            return out
        finally:
            setns(home)
    finally:
        os.close(home)
        os.close(target)


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s, how in ((dst, socket.SHUT_WR), (src, socket.SHUT_RD)):
            try:
                s.shutdown(how)
            except OSError:
                pass


def _relay(client: socket.socket, port: int) -> None:
    try:
        upstream = socket.create_connection(("127.0.0.1", port), timeout=10)
    except OSError:
        client.close()  # the service is down: the node sees the connection cut
        return
    upstream.settimeout(None)
    back = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
    back.start()
    _pump(client, upstream)
    back.join()
    client.close()
    upstream.close()


def _serve(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    while True:
        client, _ = listener.accept()
        threading.Thread(target=_relay, args=(client, port), daemon=True).start()


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--netns", required=True, help="e.g. /run/netns/node-a")
    ap.add_argument("ports", type=int, nargs="+")
    opts = ap.parse_args(argv)
    listeners = listeners_in(opts.netns, opts.ports)
    threads = [threading.Thread(target=_serve, args=(s,), daemon=True) for s in listeners]
    for t in threads:
        t.start()
    print("READY", flush=True)
    for t in threads:
        t.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())
