"""The fake API server's state: objects, resourceVersions, watch history, selectors, patches.

No I/O here: :mod:`tests.rigs.fake_apiserver` serves it over HTTP. One global
resourceVersion counter orders every change, as etcd's revision does for a real API server;
the last ``history`` changes are kept for watches, older versions are "compacted" and a watch
from one of them gets 410 Gone.
"""

from __future__ import annotations

import collections
import copy
import datetime as dt
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

Obj = dict[str, Any]


@dataclass(frozen=True)
class Resource:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    singular: str
    short_names: tuple[str, ...] = ()
    verbs: tuple[str, ...] = (
        "create",
        "delete",
        "get",
        "list",
        "patch",
        "update",
        "watch",
    )

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> tuple[str, str]:
        return (self.group, self.plural)


RESOURCES = (
    Resource("", "v1", "nodes", "Node", False, "node", ("no",)),
    Resource("", "v1", "pods", "Pod", True, "pod", ("po",)),
    Resource("", "v1", "namespaces", "Namespace", False, "namespace", ("ns",)),
    Resource("", "v1", "events", "Event", True, "event", ("ev",)),
    Resource("events.k8s.io", "v1", "events", "Event", True, "event", ("ev",)),
    Resource("crd.k8s.amazonaws.com", "v1alpha1", "eniconfigs", "ENIConfig", False, "eniconfig"),
    Resource("networking.k8s.aws", "v1alpha1", "cninodes", "CNINode", False, "cninode", ("cnd",)),
)
BY_PATH = {(r.group, r.version, r.plural): r for r in RESOURCES}


class ApiFailure(Exception):
    """Becomes a ``Status`` answer."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message


def status(code: int, reason: str, message: str) -> Obj:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure" if code >= 400 else "Success",
        "message": message,
        "reason": reason,
        "code": code,
    }


# ---------------------------------------------------------------- selectors


def field_value(obj: Obj, path: str) -> str:
    cur: Any = obj
    for part in path.split("."):
        if not isinstance(cur, dict):
            return ""
        cur = cur.get(part)
    if cur is None:
        return ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return str(cur)


def parse_field_selector(text: str) -> Callable[[Obj], bool]:
    terms: list[tuple[str, bool, str]] = []
    for raw in filter(None, (t.strip() for t in text.split(","))):
        m = re.fullmatch(r"([A-Za-z0-9_.]+)\s*(==|!=|=)\s*(.*)", raw)
        if not m:
            raise ApiFailure(400, "BadRequest", f"invalid field selector {raw!r}")
        terms.append((m.group(1), m.group(2) != "!=", m.group(3)))

    def match(obj: Obj) -> bool:
        return all((field_value(obj, f) == v) == eq for f, eq, v in terms)

    return match


_SET_TERM = re.compile(r"^\s*([A-Za-z0-9_./-]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")


def _split_label_terms(text: str) -> Iterator[str]:
    depth, start = 0, 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            yield text[start:i]
            start = i + 1
    yield text[start:]


def parse_label_selector(text: str) -> Callable[[Obj], bool]:
    tests: list[Callable[[dict[str, str]], bool]] = []
    for raw in filter(None, (t.strip() for t in _split_label_terms(text))):
        m = _SET_TERM.match(raw)
        if m:
            key, op = m.group(1), m.group(2)
            values = {v.strip() for v in m.group(3).split(",") if v.strip()}
            if op == "in":
                tests.append(lambda lb, k=key, vs=values: lb.get(k) in vs)
            else:
                tests.append(lambda lb, k=key, vs=values: lb.get(k) not in vs)
            continue
        m = re.fullmatch(r"([A-Za-z0-9_./-]+)\s*(==|!=|=)\s*([A-Za-z0-9_.-]*)", raw)
        if m:
            key, op, value = m.groups()
            if op == "!=":
                tests.append(lambda lb, k=key, v=value: lb.get(k) != v)
            else:
                tests.append(lambda lb, k=key, v=value: lb.get(k) == v)
            continue
        m = re.fullmatch(r"(!?)([A-Za-z0-9_./-]+)", raw)
        if m:
            neg, key = m.groups()
            tests.append(lambda lb, k=key, n=bool(neg): (k in lb) != n)
            continue
        raise ApiFailure(400, "BadRequest", f"invalid label selector {raw!r}")

    def match(obj: Obj) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return all(t(labels) for t in tests)

    return match


# ---------------------------------------------------------------- patches


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def strip_directives(patch: Any) -> Any:
    """A strategic merge patch treated as a merge patch: maps merge the same way (labels,
    annotations, spec fields); ``$``-directives are dropped and lists are replaced whole
    (the fake knows no patch strategies of list fields)."""
    if isinstance(patch, dict):
        return {k: strip_directives(v) for k, v in patch.items() if not k.startswith("$")}
    return patch


# ---------------------------------------------------------------- store


@dataclass
class Change:
    rv: int
    res: tuple[str, str]
    type: str
    obj: Obj
    old: Obj | None


@dataclass
class Store:
    history: int = 1000
    rv: int = 100
    compacted: int = 100  # watches from a version below this get 410
    objects: dict[tuple[str, str], dict[tuple[str, str], Obj]] = field(
        default_factory=lambda: collections.defaultdict(dict)
    )
    changes: collections.deque[Change] = field(default_factory=collections.deque)
    listeners: list[Callable[[Change], None]] = field(default_factory=list)

    def _next_rv(self) -> int:
        self.rv += 1
        return self.rv

    def _record(self, res: Resource, type_: str, obj: Obj, old: Obj | None) -> None:
        change = Change(int(obj["metadata"]["resourceVersion"]), res.key, type_, obj, old)
        self.changes.append(change)
        while len(self.changes) > self.history:
            dropped = self.changes.popleft()
            self.compacted = max(self.compacted, dropped.rv)
        for listener in list(self.listeners):
            listener(change)

    def compact(self) -> None:
        """Forget the history: every version older than now is too old to watch from."""
        self.changes.clear()
        self.compacted = self.rv

    def list(self, res: Resource, namespace: str | None) -> list[Obj]:
        items = self.objects[res.key]
        return [o for (ns, _), o in sorted(items.items()) if namespace is None or ns == namespace]

    def get(self, res: Resource, namespace: str, name: str) -> Obj:
        obj = self.objects[res.key].get((namespace, name))
        if obj is None:
            kind = f"{res.plural}.{res.group}" if res.group else res.plural
            raise ApiFailure(404, "NotFound", f'{kind} "{name}" not found')
        return obj

    def create(self, res: Resource, namespace: str, body: Obj) -> Obj:
        meta = body.setdefault("metadata", {})
        name = meta.get("name") or ""
        if not name and meta.get("generateName"):
            name = meta["generateName"] + uuid.uuid4().hex[:5]
        if not name:
            raise ApiFailure(422, "Invalid", "metadata.name: Required value")
        if (namespace, name) in self.objects[res.key]:
            raise ApiFailure(409, "AlreadyExists", f'{res.plural} "{name}" already exists')
        obj = copy.deepcopy(body)
        obj["apiVersion"], obj["kind"] = res.api_version, res.kind
        meta = obj["metadata"]
        meta["name"] = name
        if res.namespaced:
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_rfc3339()
        meta["resourceVersion"] = str(self._next_rv())
        self.objects[res.key][(namespace, name)] = obj
        self._record(res, "ADDED", copy.deepcopy(obj), None)
        return obj

    def replace(self, res: Resource, namespace: str, name: str, body: Obj) -> Obj:
        old = self.get(res, namespace, name)
        want = (body.get("metadata") or {}).get("resourceVersion")
        if want and want != old["metadata"]["resourceVersion"]:
            raise conflict(res, name)
        return self._store(res, namespace, name, body, old)

    def patch(self, res: Resource, namespace: str, name: str, patch: Obj) -> Obj:
        old = self.get(res, namespace, name)
        want = (patch.get("metadata") or {}).get("resourceVersion")
        if want and want != old["metadata"]["resourceVersion"]:
            raise conflict(res, name)
        return self._store(res, namespace, name, merge_patch(old, patch), old)

    def _store(self, res: Resource, namespace: str, name: str, body: Obj, old: Obj) -> Obj:
        obj = copy.deepcopy(body)
        obj["apiVersion"], obj["kind"] = res.api_version, res.kind
        meta = obj.setdefault("metadata", {})
        for k in ("name", "namespace", "uid", "creationTimestamp"):
            if k in old["metadata"]:
                meta[k] = old["metadata"][k]
        if obj == old:
            return old  # no change: no new version, no watch event (as the API server)
        meta["resourceVersion"] = str(self._next_rv())
        self.objects[res.key][(namespace, name)] = obj
        self._record(res, "MODIFIED", copy.deepcopy(obj), old)
        return obj

    def delete(self, res: Resource, namespace: str, name: str) -> Obj:
        old = self.get(res, namespace, name)
        del self.objects[res.key][(namespace, name)]
        gone = copy.deepcopy(old)
        gone["metadata"]["resourceVersion"] = str(self._next_rv())
        self._record(res, "DELETED", gone, old)
        return gone


def conflict(res: Resource, name: str) -> ApiFailure:
    kind = f"{res.plural}.{res.group}" if res.group else res.plural
    return ApiFailure(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {kind} "{name}": the object has been modified; '
        "please apply your changes to the latest version and try again",
    )


def now_rfc3339() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
