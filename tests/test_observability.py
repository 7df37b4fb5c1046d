"""Logs, metrics and traces, as an operator gets them from the running processes.

The API's /metrics is checked on the session's stack. The rest runs on an API and a worker of this
module's own (`observed`), configured as production would be: JSON logs, traces written to the
console exporter (one span per line), the worker's metrics port open. They share the session's
database and Temporal server, on a task queue of their own.
"""

import gzip
import json
import os
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from prometheus_client.parser import text_string_to_metric_families

from core.observability import ACTIVITY_OUTCOMES, PROVISION_SECONDS
from harness.servers import Process, free_port, wait_for_http, wait_until
from harness.world import TenantWorld, make_tenant, request_body, wait_for_cluster
from tests.conftest import Database, Stack, migrated_database, start_worker, wait_for_worker

# A simulated provider whose compute nodes fail once with an outage (retryable), then come up; and
# one whose network always fails with a configuration error (not retryable).
FLAKY = {"kind": "sim", "config": {"failAt": "compute-nodes", "failWith": "outage", "failTimes": 1}}
BROKEN = {"kind": "sim", "config": {"failAt": "network"}}


def samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [(s.name, s.labels, s.value) for f in text_string_to_metric_families(text) for s in f.samples]


def root_url(base_url: str) -> str:
    return base_url.removesuffix("/api/v1")


# --- the API's metrics, on the session's stack ----------------------------------------------------


def test_metrics_answer_without_a_token_and_count_by_route_template(stack: Stack, api, tenant: TenantWorld):
    missing = uuid.uuid4()
    assert api.get(f"/clusters/{missing}", headers=tenant.cad.headers).status_code == 404
    assert api.get(f"/clusters/{missing}").status_code == 401  # turned away before routing: still its route

    response = httpx.get(f"{root_url(stack.base_url)}/metrics", timeout=10)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    found = samples(response.text)
    counts = {
        (labels["route"], labels["status"]): value
        for name, labels, value in found
        if name == "hpcinfra_http_requests_total" and labels["method"] == "GET"
    }
    assert counts[("/api/v1/clusters/{clusterId}", "404")] >= 1
    assert counts[("/api/v1/clusters/{clusterId}", "401")] >= 1
    assert not any(str(missing) in route for route, _ in counts)  # never a raw path
    buckets = [
        labels["le"]
        for name, labels, _ in found
        if name == "hpcinfra_http_request_duration_seconds_bucket" and labels["route"] == "/api/v1/clusters/{clusterId}"
    ]
    assert {"0.005", "0.1", "1.0", "+Inf"} <= set(buckets)
    assert "/metrics" not in httpx.get(f"{root_url(stack.base_url)}/openapi.json", timeout=10).json()["paths"]


def test_a_request_id_is_taken_from_the_caller_or_made(api):
    given = f"trace-{uuid.uuid4().hex}"
    assert api.get("/healthz", headers={"X-Request-ID": given}).headers["x-request-id"] == given
    made = api.get("/healthz").headers["x-request-id"]
    assert made and made != given
    # A value that could forge log lines is replaced, not echoed.
    forged = api.get("/healthz", headers={"X-Request-ID": 'x" level=ERROR'}).headers["x-request-id"]
    assert forged != 'x" level=ERROR' and '"' not in forged


# --- an API and a worker configured for production's observability -------------------------------


@dataclass
class Observed:
    base_url: str
    metrics_url: str
    api: Process
    worker: Process
    db: Database

    def lines(self, process: Process) -> list[dict[str, Any]]:
        """Every line the process wrote, each parsed as JSON (a line that is not JSON fails the test)."""
        return [json.loads(line) for line in process.output().splitlines() if line.strip()]

    def logs(self, process: Process) -> list[dict[str, Any]]:
        return [line for line in self.lines(process) if "message" in line]

    def spans(self) -> list[dict[str, Any]]:
        return [line for p in (self.api, self.worker) for line in self.lines(p) if "context" in line]


@pytest.fixture(scope="module")
def observed(stack: Stack, tmp_path_factory) -> Iterator[Observed]:
    if stack.db.kind != "sqlite":
        pytest.skip("logs, traces and worker metrics do not depend on the database: checked once, on SQLite")
    folder = tmp_path_factory.mktemp("observed")
    api_port, metrics_port = free_port(), free_port()
    # A database of its own: a worker starting on the shared one would resume (and count) the clusters
    # other tests left pending.
    with migrated_database("sqlite", tmp_path_factory) as db:
        yield from _observed(stack, db, folder, api_port, metrics_port)


def _observed(stack: Stack, db: Database, folder, api_port: int, metrics_port: int) -> Iterator[Observed]:
    env = {
        **stack.env,
        "HPCINFRA_DATABASE_URL": db.url,
        "HPCINFRA_TASK_QUEUE": f"tq-observed-{uuid.uuid4().hex[:8]}",
        "HPCINFRA_API_PORT": str(api_port),
        "HPCINFRA_LOG_FORMAT": "json",
        "HPCINFRA_OTEL_EXPORTER": "console",
        "HPCINFRA_WORKER_METRICS_PORT": str(metrics_port),
        "HPCINFRA_WORKER_METRICS_HOST": "127.0.0.1",
        "OTEL_BSP_SCHEDULE_DELAY": "200",  # spans reach the console within a fraction of a second
        "PYTHONUNBUFFERED": "1",  # spans (stdout) and logs (stderr) share a file: whole lines only
    }
    worker = start_worker(env, folder / "worker.log")
    api = Process([os.sys.executable, "-m", "cli", "api"], folder / "api.log", env)
    base_url = f"http://127.0.0.1:{api_port}/api/v1"
    try:
        wait_for_http(f"{base_url}/healthz", api)
        wait_for_worker(worker)
        yield Observed(base_url, f"http://127.0.0.1:{metrics_port}/metrics", api, worker, db)
    finally:
        api.stop()
        worker.stop()


@pytest.fixture(scope="module")
def flaky_tenant(observed: Observed, stack: Stack) -> TenantWorld:
    return make_tenant(observed.db.sessions, extra_providers={"flaky": FLAKY, "broken": BROKEN})


@pytest.fixture(scope="module")
def provisioned(observed: Observed, flaky_tenant: TenantWorld) -> dict[str, Any]:
    """A cluster provisioned through the observed API and worker, on the provider that fails once."""
    cad = flaky_tenant.cad
    with httpx.Client(base_url=observed.base_url, timeout=30) as client:
        body = request_body(flaky_tenant.providers["flaky"])
        response = client.post("/clusters", json=body, headers={**cad.headers, "X-Request-ID": "provision-1"})
        assert response.status_code == 201, response.text
        return wait_for_cluster(client, response.json()["id"], cad.headers, "available", timeout=60)


def test_log_lines_are_json_with_request_id_and_tenant(observed: Observed, flaky_tenant: TenantWorld):
    request_id = f"req-{uuid.uuid4().hex}"
    with httpx.Client(base_url=observed.base_url, timeout=30) as client:
        response = client.get("/clusters", headers={**flaky_tenant.cad.headers, "X-Request-ID": request_id})
    assert response.status_code == 200
    assert response.headers["x-request-id"] == request_id

    def access_line() -> dict[str, Any] | None:
        return next((line for line in observed.logs(observed.api) if line.get("request_id") == request_id), None)

    line = wait_until(access_line, what="the request's access log line")
    assert line["tenant"] == flaky_tenant.id
    assert line["route"] == "/api/v1/clusters" and line["status"] == 200 and line["method"] == "GET"
    assert {"time", "level", "logger", "message"} <= set(line)


def test_tokens_never_reach_the_logs(observed: Observed, flaky_tenant: TenantWorld):
    fake = "obviously-fake-token-0000"
    with httpx.Client(base_url=observed.base_url, timeout=30) as client:
        assert client.get("/clusters", headers={"Authorization": f"Bearer {fake}"}).status_code == 401
        assert client.get("/clusters", headers=flaky_tenant.it.headers).status_code == 200
        request_id = client.get("/healthz").headers["x-request-id"]
    wait_until(lambda: request_id in observed.api.output(), what="the last request's log line")
    written = observed.api.output() + observed.worker.output()
    assert fake not in written
    assert flaky_tenant.it.token not in written
    assert "authorization" not in written.lower()


def test_worker_metrics_port_serves_sdk_and_activity_metrics(
    observed: Observed, flaky_tenant: TenantWorld, provisioned: dict[str, Any]
):
    with httpx.Client(base_url=observed.base_url, timeout=30) as client:
        body = request_body(flaky_tenant.providers["broken"])
        broken = client.post("/clusters", json=body, headers=flaky_tenant.cad.headers)
        assert broken.status_code == 201, broken.text
        wait_for_cluster(client, broken.json()["id"], flaky_tenant.cad.headers, "error")

    def outcomes() -> dict[str, float] | None:
        found = samples(httpx.get(observed.metrics_url, timeout=10).text)
        counts = {
            labels["outcome"]: value
            for name, labels, value in found
            if name == ACTIVITY_OUTCOMES and labels.get("activity_type") == "ProvisionCluster"
        }
        return counts if counts.get("completed") and counts.get("failed") else None

    counts = wait_until(outcomes, what="the provision activity's outcome counts")
    assert counts == {"completed": 1, "retried": 1, "failed": 1}  # flaky: retried, then completed; broken: failed

    found = samples(httpx.get(observed.metrics_url, timeout=10).text)
    assert any(name.startswith("temporal_") for name, _, _ in found)  # the SDK's own
    provisioning = {
        (labels["provider_kind"], labels["outcome"]): value
        for name, labels, value in found
        if name == f"{PROVISION_SECONDS}_count"
    }
    assert provisioning == {("sim", "completed"): 1, ("sim", "retried"): 1, ("sim", "failed"): 1}


def test_worker_log_lines_name_the_workflow_and_activity(observed: Observed, provisioned: dict[str, Any]):
    """The first provisioning attempt failed: the SDK's warning about it is a JSON line naming where it happened."""

    def warning() -> dict[str, Any] | None:
        return next(
            (
                line
                for line in observed.logs(observed.worker)
                if line.get("workflow_id") == f"cluster-{provisioned['id']}"
                and line.get("activity_type") == "ProvisionCluster"
            ),
            None,
        )

    line = wait_until(warning, what="a worker log line of the provision activity")
    assert line["level"] == "WARNING" and line["attempt"] == 1
    assert line["workflow_type"] == "Cluster"


def test_one_trace_covers_the_request_the_workflow_and_its_activities(observed: Observed, provisioned: dict[str, Any]):
    def trace() -> list[dict[str, Any]] | None:
        spans = observed.spans()
        starts = [
            s
            for s in spans
            if s["name"] == "StartWorkflow:Cluster"
            and s["attributes"].get("temporalWorkflowID") == f"cluster-{provisioned['id']}"
        ]
        if not starts:
            return None
        trace_id = starts[0]["context"]["trace_id"]
        in_trace = [s for s in spans if s["context"]["trace_id"] == trace_id]
        names = {s["name"] for s in in_trace}
        wanted = {"POST /api/v1/clusters", "RunWorkflow:Cluster", "RunActivity:ProvisionCluster"}
        return in_trace if wanted <= names else None

    spans = wait_until(trace, what="the request's trace to reach the worker's activities")
    by_id = {s["context"]["span_id"]: s for s in spans}
    request = next(s for s in spans if s["name"] == "POST /api/v1/clusters")
    assert request["parent_id"] is None  # the request is the root
    assert request["attributes"]["http.route"] == "/api/v1/clusters"
    assert request["attributes"]["hpcinfra.request_id"] == "provision-1"
    assert request["resource"]["attributes"]["service.name"] == "hpcinfra-api"
    activity = next(s for s in spans if s["name"] == "RunActivity:ProvisionCluster")
    assert activity["resource"]["attributes"]["service.name"] == "hpcinfra-worker"
    # Each span but the root has its parent in the same trace.
    assert all(s["parent_id"] in by_id for s in spans if s is not request)
    assert not any("Bearer" in json.dumps(s) for s in spans)


# --- traces sent to a collector over OTLP -------------------------------------------------------------


class Collector(BaseHTTPRequestHandler):
    """The receiving end of OTLP over HTTP: keeps each exported span as (service name, span name, attributes)."""

    received: list[tuple[str, str, dict[str, Any]]] = []

    def do_POST(self) -> None:  # the name http.server calls
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        request = ExportTraceServiceRequest.FromString(body)
        for resource_spans in request.resource_spans:
            service = next(a.value.string_value for a in resource_spans.resource.attributes if a.key == "service.name")
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    attributes = {a.key: a.value.string_value for a in span.attributes}
                    self.received.append((service, span.name, attributes))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_traces_reach_an_otlp_collector(stack: Stack, tmp_path):
    if stack.db.kind != "sqlite":
        pytest.skip("the trace exporter does not depend on the database: checked once, on SQLite")
    collector = ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    port = free_port()
    env = {
        **stack.env,
        "HPCINFRA_API_PORT": str(port),
        "HPCINFRA_OTEL_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector.server_port}",
        "OTEL_SERVICE_NAME": "hpcinfra-api-eu",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
    }
    api = Process([os.sys.executable, "-m", "cli", "api"], tmp_path / "api.log", env)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/api/v1/healthz", api)
        request_id = f"otlp-{uuid.uuid4().hex}"
        httpx.get(f"http://127.0.0.1:{port}/api/v1/healthz", headers={"X-Request-ID": request_id}, timeout=10)

        def exported() -> tuple[str, str, dict[str, Any]] | None:
            return next((s for s in Collector.received if s[2].get("hpcinfra.request_id") == request_id), None)

        service, name, attributes = wait_until(exported, what="the request's span at the collector")
        assert (service, name) == ("hpcinfra-api-eu", "GET /api/v1/healthz")
        assert attributes["http.route"] == "/api/v1/healthz"
    finally:
        api.stop()
        collector.shutdown()
        collector.server_close()
