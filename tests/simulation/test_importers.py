"""Replaying a real cluster: traces from ``kubectl get pods -A -o json``, Kubernetes events
and audit logs (sample files in ``data/`` in the shapes those commands print)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from adapters.ipamctl.main import main as ipamctl_main
from adapters.simulator.importers import from_audit, from_events, import_trace
from adapters.simulator.workload import REBASE_LEAD_S, Trace, read_trace

DATA = Path(__file__).parent / "data"
T0 = 1_796_637_600.0  # 2026-12-07T10:00:00Z
NODE_A = "ip-10-0-1-17.us-west-2.compute.internal"
NODE_B = "ip-10-0-2-33.us-west-2.compute.internal"


def named(trace: Trace) -> list[tuple[float, str, str, str]]:
    """(seconds after T0, node name, event, pod) of each event."""
    return [(round(e.time + trace.rebased_by - T0, 3), trace.node_names[e.node], e.event, e.pod)
            for e in trace.events]  # fmt: skip


def test_kubectl_pods_start_completion_deletion_and_skips() -> None:
    imported = import_trace(DATA / "kubectl_pods.json", "kubectl-pods")
    assert named(imported.trace) == [
        (0.0, NODE_A, "add", "shop/web-6d4cf56db6-2h8xq"),  # running: stays to the end
        (60.0, NODE_B, "add", "shop/web-6d4cf56db6-q9zbt"),
        (301.0, NODE_B, "add", "batch/report-29012345-x7k9d"),  # startTime
        (390.0, NODE_B, "del", "batch/report-29012345-x7k9d"),  # container finishedAt
        (630.0, NODE_B, "del", "shop/web-6d4cf56db6-q9zbt"),  # deletionTimestamp
    ]
    assert imported.trace.events[0].time == REBASE_LEAD_S
    assert imported.skipped == {
        "host-network pods (no address from the CNI)": 1,  # aws-node itself
        "pods not scheduled": 1,
    }


def test_events_scheduled_and_killing() -> None:
    imported = import_trace(DATA / "events.json", "events")
    assert named(imported.trace) == [
        (0.112, NODE_A, "add", "shop/web-6d4cf56db6-2h8xq"),
        (60.5, NODE_B, "add", "shop/web-6d4cf56db6-q9zbt"),
        (600.0, NODE_B, "del", "shop/web-6d4cf56db6-q9zbt"),
    ]
    assert imported.skipped == {"Killing events of pods whose Scheduled event is missing": 1}


def test_events_as_watch_json_lines() -> None:
    lines = [
        {"type": "ADDED", "object": {
            "kind": "Event", "reason": "Scheduled", "eventTime": "2026-12-07T10:00:00Z",
            "involvedObject": {"kind": "Pod", "name": "a", "namespace": "ns"},
            "message": f"Successfully assigned ns/a to {NODE_A}"}},
        {"kind": "Event", "reason": "Killing", "lastTimestamp": "2026-12-07T10:01:00Z",
         "firstTimestamp": "2026-12-07T10:01:00Z",
         "involvedObject": {"kind": "Pod", "name": "a", "namespace": "ns"}},
    ]  # fmt: skip
    imported = from_events("\n".join(json.dumps(x) for x in lines) + "\n")
    assert [(e.event, e.pod) for e in imported.trace.events] == [("add", "ns/a"), ("del", "ns/a")]


def test_audit_bindings_completions_and_deletes() -> None:
    imported = import_trace(DATA / "audit.jsonl", "audit")
    assert named(imported.trace) == [
        (0.104, NODE_A, "add", "shop/web-1"),  # the 404 delete does not end it
        (5.003, NODE_B, "add", "batch/job-a"),
        (125.01, NODE_B, "del", "batch/job-a"),  # phase Succeeded; the later delete ignored
    ]
    assert imported.skipped == {
        "bindings without the node (audit level Metadata)": 1,
        "ends of pods whose binding the log does not show": 1,
    }


def test_audit_pod_recreated_under_the_same_name() -> None:
    def entry(verb: str, sub: str | None, t: str, node: str = "") -> str:
        ref = {"resource": "pods", "namespace": "ns", "name": "db-0"}
        if sub:
            ref["subresource"] = sub
        doc = {"stage": "ResponseComplete", "verb": verb, "objectRef": ref,
               "responseStatus": {"code": 200}, "stageTimestamp": t}  # fmt: skip
        if node:
            doc["requestObject"] = {"target": {"name": node}}
        return json.dumps(doc)

    text = "\n".join([
        entry("create", "binding", "2026-12-07T10:00:00Z", NODE_A),
        entry("delete", None, "2026-12-07T10:05:00Z"),
        entry("create", "binding", "2026-12-07T10:05:10Z", NODE_B),
    ])  # fmt: skip
    trace = from_audit(text).trace
    assert [(trace.node_names[e.node], e.event) for e in trace.events] == [
        (NODE_A, "add"), (NODE_A, "del"), (NODE_B, "add")]  # fmt: skip


def test_import_trace_command_writes_a_trace_simulate_reads(tmp_path: Path) -> None:
    out_csv = tmp_path / "cluster.csv"
    code = ipamctl_main(["import-trace", "--from", "kubectl-pods",
                         str(DATA / "kubectl_pods.json"), "-o", str(out_csv)])  # fmt: skip
    assert code == 0
    trace = read_trace(out_csv)
    assert trace.node_names == (NODE_A, NODE_B) and len(trace.events) == 5
    out = io.StringIO()
    code = ipamctl_main(["--json", "simulate", "--trace", str(out_csv), "--no-progress"], out)
    assert code == 0 and json.loads(out.getvalue())["measures"]["pods_served"] == 3


@pytest.mark.parametrize(("kind", "name"), [("kubectl-pods", "kubectl_pods.json"),
                                            ("events", "events.json"),
                                            ("audit", "audit.jsonl")])  # fmt: skip
def test_simulate_and_recommend_read_exports_directly(
    kind: str, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = io.StringIO()
    code = ipamctl_main(["--json", "simulate", "--trace", str(DATA / name), "--trace-from",
                         kind, "--no-progress"], out)  # fmt: skip
    assert code == 0
    doc = json.loads(out.getvalue())
    assert doc["measures"]["nodes"] == 2 and doc["measures"]["pods_unserved"] == 0
    assert "times are absolute" in capsys.readouterr().err
    out = io.StringIO()
    code = ipamctl_main(["recommend", "--trace", str(DATA / name), "--trace-from", kind,
                         "--no-progress", "--candidate", "WARM_IP_TARGET=2"], out)  # fmt: skip
    assert code == 0 and "recommended:" in out.getvalue()


def test_a_broken_export_names_the_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "audit.jsonl"
    bad.write_text('{"stage": "ResponseComplete"}\n{"stage": \n')
    assert ipamctl_main(["import-trace", "--from", "audit", str(bad)]) == 2
    assert "audit.jsonl line 2: not valid JSON" in capsys.readouterr().err
