"""The fake API server's own logic: JSON merge patch (RFC 7386's examples), selectors,
versions, 409 and compaction."""

from __future__ import annotations

import pytest

from tests.rigs.apistore import (
    BY_PATH,
    ApiFailure,
    Store,
    merge_patch,
    parse_field_selector,
    parse_label_selector,
)


@pytest.mark.parametrize(
    ("target", "patch", "result"),
    [  # RFC 7386, appendix A
        ({"a": "b"}, {"a": "c"}, {"a": "c"}),
        ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
        ({"a": "b"}, {"a": None}, {}),
        ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
        ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
        ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
        ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
        ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
        (["a", "b"], ["c", "d"], ["c", "d"]),
        ({"a": "b"}, ["c"], ["c"]),
        ({"a": "foo"}, None, None),
        ({"a": "foo"}, "bar", "bar"),
        ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
        ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
        ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
    ],
)
def test_merge_patch_rfc7386(target, patch, result):
    assert merge_patch(target, patch) == result


POD = {
    "metadata": {"name": "p", "namespace": "ns", "labels": {"app": "web", "tier": "front"}},
    "spec": {"nodeName": "n1"},
    "status": {"phase": "Running"},
}


@pytest.mark.parametrize(
    ("selector", "matches"),
    [
        ("spec.nodeName=n1", True),
        ("spec.nodeName==n1", True),
        ("spec.nodeName!=n1", False),
        ("spec.nodeName=n1,status.phase=Running", True),
        ("metadata.namespace=other", False),
        ("", True),
    ],
)
def test_field_selectors(selector, matches):
    assert parse_field_selector(selector)(POD) is matches


@pytest.mark.parametrize(
    ("selector", "matches"),
    [
        ("app=web", True),
        ("app!=web", False),
        ("app in (web, api)", True),
        ("app notin (web)", False),
        ("app,tier=front", True),
        ("!app", False),
        ("missing", False),
        ("!missing", True),
        ("app=web,tier in (back)", False),
    ],
)
def test_label_selectors(selector, matches):
    assert parse_label_selector(selector)(POD) is matches


def test_bad_selectors_are_400():
    with pytest.raises(ApiFailure) as info:
        parse_field_selector("spec.nodeName")
    assert info.value.code == 400
    with pytest.raises(ApiFailure):
        parse_label_selector("a=(b")


def test_versions_conflicts_and_compaction():
    store = Store(history=3)
    pods = BY_PATH[("", "v1", "pods")]
    created = store.create(pods, "ns", {"metadata": {"name": "p"}})
    rv = created["metadata"]["resourceVersion"]
    patch = {"metadata": {"resourceVersion": rv, "labels": {"a": "b"}}}
    patched = store.patch(pods, "ns", "p", patch)
    assert int(patched["metadata"]["resourceVersion"]) > int(rv)
    with pytest.raises(ApiFailure) as info:
        store.patch(pods, "ns", "p", {"metadata": {"resourceVersion": rv}})
    assert info.value.code == 409
    same = store.patch(pods, "ns", "p", {"metadata": {"labels": {"a": "b"}}})
    assert same["metadata"]["resourceVersion"] == patched["metadata"]["resourceVersion"]
    for i in range(5):
        store.patch(pods, "ns", "p", {"metadata": {"labels": {"n": str(i)}}})
    assert len(store.changes) == 3 and store.compacted >= int(rv)
    with pytest.raises(ApiFailure) as info:
        store.create(pods, "ns", {"metadata": {"name": "p"}})
    assert info.value.code == 409
