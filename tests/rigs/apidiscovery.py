"""What kubectl needs besides the objects: discovery (``/apis``, per group-version resource
lists), OpenAPI documents (v3 telling that the server validates fields itself, an empty v2
for kubectl before 1.27) and ``Table`` answers for ``kubectl get``."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from tests.rigs.apistore import RESOURCES, ApiFailure, Obj, Resource


def api_group_list() -> Obj:
    groups: dict[str, list[str]] = {}
    for r in RESOURCES:
        if r.group and r.version not in groups.setdefault(r.group, []):
            groups[r.group].append(r.version)
    return {
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [
            {
                "name": g,
                "versions": [{"groupVersion": f"{g}/{v}", "version": v} for v in vs],
                "preferredVersion": {"groupVersion": f"{g}/{vs[0]}", "version": vs[0]},
            }
            for g, vs in groups.items()
        ],
    }


def resource_list(group: str, version: str) -> Obj:
    found = [r for r in RESOURCES if r.group == group and r.version == version]
    if not found:
        raise ApiFailure(404, "NotFound", "the server could not find the requested resource")
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": [
            {
                "name": r.plural,
                "singularName": r.singular,
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": list(r.verbs),
                **({"shortNames": list(r.short_names)} if r.short_names else {}),
            }
            for r in found
        ],
    }


def openapi_index() -> Obj:
    """``/openapi/v3``: one document per group-version (what kubectl fetches to learn that
    the server validates fields itself, so it needs no schemas)."""
    gvs = sorted({("api/" if not r.group else "apis/") + r.api_version for r in RESOURCES})
    return {"paths": {gv: {"serverRelativeURL": f"/openapi/v3/{gv}?hash=fake"} for gv in gvs}}


def openapi_group_version(gv: str) -> Obj:
    """A group-version's OpenAPI v3 document: the PATCH operation of each object path, with
    its group-version-kind and the ``fieldValidation`` parameter (no schemas)."""
    paths: Obj = {}
    for r in RESOURCES:
        base = ("api/" if not r.group else "apis/") + r.api_version
        if base != gv:
            continue
        ns = "namespaces/{namespace}/" if r.namespaced else ""
        paths[f"/{base}/{ns}{r.plural}/{{name}}"] = {
            "patch": {
                "x-kubernetes-group-version-kind": {
                    "group": r.group, "version": r.version, "kind": r.kind,
                },
                "parameters": [
                    {"name": "fieldValidation", "in": "query", "schema": {"type": "string"}}
                ],
                "responses": {"200": {"description": "OK"}},
            }
        }  # fmt: skip
    if not paths:
        raise ApiFailure(404, "NotFound", "the server could not find the requested resource")
    return {"openapi": "3.0.0", "info": {"title": "fake", "version": "v1"}, "paths": paths}


def wants_table(request: web.Request) -> bool:
    accept = request.headers.get("Accept", "")
    return "as=Table" in accept


def table(res: Resource, items: list[Obj], rv: str, meta: Obj | None = None) -> Obj:
    columns = [{"name": "Name", "type": "string", "format": "name", "description": "Name"}]
    extra: list[tuple[str, Callable[[Obj], str]]] = []
    if res.kind == "Pod":
        extra = [
            ("Status", lambda o: (o.get("status") or {}).get("phase", "")),
            ("IP", lambda o: (o.get("status") or {}).get("podIP", "")),
            ("Node", lambda o: (o.get("spec") or {}).get("nodeName", "")),
        ]
    elif res.kind == "ENIConfig":
        extra = [("Subnet", lambda o: (o.get("spec") or {}).get("subnet", ""))]
    elif res.kind == "Node":
        extra = [
            ("Pods", lambda o: ((o.get("status") or {}).get("capacity") or {}).get("pods", ""))
        ]
    columns += [{"name": n, "type": "string", "format": "", "description": n} for n, _ in extra]
    columns.append({"name": "Created", "type": "string", "format": "", "description": "Created"})
    rows = [
        {
            "cells": [
                o["metadata"]["name"],
                *(f(o) for _, f in extra),
                o["metadata"].get("creationTimestamp", ""),
            ],
            "object": {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": o["metadata"],
            },
        }
        for o in items
    ]
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": meta or {"resourceVersion": rv},
        "columnDefinitions": columns,
        "rows": rows,
    }
