"""Pending DEL records: a DEL the plugin could not deliver to the daemon, kept as a file that
the daemon processes at its next start, so the address is released and nothing leaks.

Standard library only (the plugin writes these). File names are digests of validated names,
never paths from outside; records are written atomically (temporary file, then rename).
"""

from __future__ import annotations

import os

from adapters.protocol import (
    ERR_IO,
    MAX_MESSAGE_SIZE,
    OP_DEL,
    ProtocolError,
    Request,
    bad_request,
    decode_request,
    encode_request,
    show,
    validate_container_id,
    validate_if_name,
)

TYPE_CHECKING = False
if TYPE_CHECKING:  # only for type checkers; keeps ``typing`` out of the plugin's cold start
    from collections.abc import Callable

# --------------------------------------------------------------------------- pending DELs

PENDING_DEL_SUFFIX = ".json"
_PENDING_DEL_PREFIX = "del-"


def pending_del_filename(container_id: str, if_name: str) -> str:
    """The record's file name: a digest of the validated container id and interface name, so
    nothing from outside ever becomes part of a path."""
    import hashlib

    validate_container_id(container_id)
    validate_if_name(if_name)
    digest = hashlib.sha256(f"{container_id}\x00{if_name}".encode()).hexdigest()
    return f"{_PENDING_DEL_PREFIX}{digest[:40]}{PENDING_DEL_SUFFIX}"


def write_pending_del(directory: str, req: Request) -> str:
    """Atomically record a DEL the daemon could not take (temp file + fsync + rename).

    Returns the record's path; raises ProtocolError ``bad_request`` for an invalid request and
    ``io`` when the directory cannot be written.
    """
    if req.op != OP_DEL:
        raise bad_request(f"a pending record must be a del request, not {show(req.op)}")
    data = encode_request(req)
    name = pending_del_filename(req.container_id, req.if_name)
    final = os.path.join(directory, name)
    tmp = os.path.join(directory, f".tmp-{os.getpid()}-{name}")
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
        try:
            dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError:
            pass
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise ProtocolError(
            ERR_IO, f"cannot write pending DEL record in {directory}: {e.strerror or e}"
        ) from None
    return final


def read_pending_dels(
    directory: str, on_error: Callable[[str, ProtocolError], None] | None = None
) -> list[Request]:
    """The pending DEL requests recorded in ``directory``, oldest first.

    Files that are not regular files, are too large, do not decode as a ``del`` request, or
    whose name does not match their content are skipped (and reported to ``on_error`` with
    their path); they are left in place. A missing directory yields ``[]``.
    """
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    except OSError as e:
        raise ProtocolError(
            ERR_IO, f"cannot list pending DEL directory {directory}: {e.strerror or e}"
        ) from None
    found: list[tuple[int, str, Request]] = []
    for name in names:
        if not (name.startswith(_PENDING_DEL_PREFIX) and name.endswith(PENDING_DEL_SUFFIX)):
            continue
        path = os.path.join(directory, name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError as e:
            if on_error is not None:
                on_error(path, ProtocolError(ERR_IO, f"cannot open: {e.strerror or e}"))
            continue
        try:
            st = os.fstat(fd)
            import stat

            if not stat.S_ISREG(st.st_mode):
                raise ProtocolError(ERR_IO, "not a regular file")
            data = os.read(fd, MAX_MESSAGE_SIZE + 1)
            req = decode_request(data)
            if req.op != OP_DEL:
                raise bad_request(f"record holds op {show(req.op)}, not del")
            if pending_del_filename(req.container_id, req.if_name) != name:
                raise bad_request("record's name does not match its content")
            found.append((st.st_mtime_ns, name, req))
        except ProtocolError as e:
            if on_error is not None:
                on_error(path, e)
        except OSError as e:
            if on_error is not None:
                on_error(path, ProtocolError(ERR_IO, f"cannot read: {e.strerror or e}"))
        finally:
            os.close(fd)
    found.sort(key=lambda t: (t[0], t[1]))
    return [req for _, _, req in found]


def remove_pending_del(directory: str, req: Request) -> bool:
    """Delete the record for ``req`` (after the daemon released its address). Returns whether a
    record was removed; a missing one is not an error."""
    path = os.path.join(directory, pending_del_filename(req.container_id, req.if_name))
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    except OSError as e:
        raise ProtocolError(
            ERR_IO, f"cannot remove pending DEL record {path}: {e.strerror or e}"
        ) from None
    return True
