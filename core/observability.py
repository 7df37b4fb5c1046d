"""Observability shared by the API and the worker: logs, metrics and traces.

- Logs: one handler on the root logger, writing JSON objects (production) or text (development).
  Every line written while a request is served carries its request id and, once the caller is
  authenticated, its tenant; in the worker, lines carry the workflow and activity they come from.
  A bearer token that finds its way into a message is blanked before it is written.
- Metrics: the API counts requests by method, route template and status and times them
  (prometheus-client, served at GET /metrics). The worker serves the Temporal SDK's metrics and the
  application's own (activity outcomes, provisioning durations) on one port, all through the SDK's
  Prometheus exporter: one scrape target per worker.
- Traces: OpenTelemetry, off unless HPCINFRA_OTEL_EXPORTER says where spans go. When on, an HTTP
  request, the workflow it starts and that workflow's activities share one trace: FastAPI's
  own telemetry makes the request span, Temporal's TracingInterceptor carries the context through
  workflow and activity headers.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import re
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import temporalio.activity
import temporalio.workflow
from opentelemetry import trace
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, disable_created_metrics, generate_latest
from pythonjsonlogger.json import JsonFormatter
from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from temporalio.common import MetricMeter
from temporalio.exceptions import ApplicationError, CancelledError
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor

from core.settings import Settings

REQUEST_ID_HEADER = "X-Request-ID"
# An incoming request id is kept only if it is short and plain; anything else (newlines, quotes,
# kilobytes) is replaced by a generated one, so a caller cannot write into the logs through it.
_PLAIN_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_BEARER = re.compile(r"(?i)\b(bearer)\s+[^\s\"',;]+")

# ---------------------------------------------------------------------------------------------
# Logs
# ---------------------------------------------------------------------------------------------


@dataclass
class RequestContext:
    """What the log lines of one HTTP request share. `state` is the request's ASGI state, where
    authentication puts the caller: the tenant is read from it when a line is written."""

    request_id: str
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def tenant(self) -> str | None:
        user = self.state.get("user")
        tenant_id = getattr(user, "tenant_id", None)
        return str(tenant_id) if tenant_id is not None else None


current_request: contextvars.ContextVar[RequestContext | None] = contextvars.ContextVar("current_request", default=None)

# What a line from a Temporal worker says about where it comes from, from the extras the SDK's
# loggers add (`temporal_activity`, `temporal_workflow`) or, for other loggers, the running activity.
_TEMPORAL_FIELDS = ("workflow_id", "workflow_type", "run_id", "activity_type", "activity_id", "attempt")


class ContextFilter(logging.Filter):
    """Adds request_id, tenant, trace_id and the Temporal fields to each record, and blanks bearer tokens."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = current_request.get()
        if context is not None:
            record.request_id = context.request_id
            tenant = context.tenant
            if tenant is not None:
                record.tenant = tenant
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            record.trace_id = format(span.trace_id, "032x")
        _add_temporal_fields(record)
        _redact(record)
        return True


def _add_temporal_fields(record: logging.LogRecord) -> None:
    details: dict[str, Any] = {}
    for key in ("temporal_workflow", "temporal_activity"):
        extra = getattr(record, key, None)
        if isinstance(extra, dict):
            details.update(extra)
    if not details and temporalio.activity.in_activity():
        info = temporalio.activity.info()
        details = {
            "workflow_id": info.workflow_id,
            "workflow_type": info.workflow_type,
            "activity_type": info.activity_type,
            "activity_id": info.activity_id,
            "attempt": info.attempt,
        }
    if "workflow_run_id" in details:
        details.setdefault("run_id", details["workflow_run_id"])
    for name in _TEMPORAL_FIELDS:
        if details.get(name) is not None and not hasattr(record, name):
            setattr(record, name, details[name])


def _redact(record: logging.LogRecord) -> None:
    """A defence in depth: nothing logs headers, but a message that quotes one must not carry a token."""
    try:
        message = record.getMessage()
    except Exception:  # noqa: BLE001 - a bad format string is the logging module's to report
        return
    if _BEARER.search(message):
        record.msg, record.args = _BEARER.sub(r"\1 [redacted]", message), None


class TextFormatter(logging.Formatter):
    """Plain lines for people at a terminal, with the context fields appended as key=value."""

    _FIELDS = ("request_id", "tenant", "trace_id", *_TEMPORAL_FIELDS)

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = " ".join(f"{k}={getattr(record, k)}" for k in self._FIELDS if hasattr(record, k))
        return f"{line} [{extras}]" if extras else line


def json_formatter() -> logging.Formatter:
    """One JSON object per line; every extra on the record (request_id, tenant, ...) becomes a key.
    The SDK's nested dicts are left out: their fields are flattened by ContextFilter."""
    return JsonFormatter(
        "{levelname}{name}{message}",
        style="{",
        rename_fields={"levelname": "level", "name": "logger"},
        reserved_attrs=[*JsonFormatter().reserved_attrs, "temporal_workflow", "temporal_activity", "color_message"],
        timestamp="time",
    )


_HANDLER_NAME = "hpcinfra"


def configure_logging(settings: Settings) -> None:
    """Send every log line through one handler in the configured format. Idempotent: calling it
    again replaces the handler it installed and leaves any other (a test runner's) alone.

    uvicorn's loggers are routed to the same handler; its access log is silenced because
    RequestTelemetry writes a richer one (route, duration, request id, tenant)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(json_formatter() if settings.json_logs else TextFormatter())
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level)
    logging.captureWarnings(True)  # warnings too become lines of the chosen format
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    access = logging.getLogger("uvicorn.access")
    access.handlers.clear()
    access.propagate = False
    if settings.json_logs:
        # The fields are in the JSON object already; appended to the message they would be noise.
        temporalio.activity.logger.activity_info_on_message = False
        temporalio.workflow.logger.workflow_info_on_message = False


# ---------------------------------------------------------------------------------------------
# API: request ids, access log, metrics
# ---------------------------------------------------------------------------------------------

# The *_created series double what is exposed and no dashboard here reads them.
disable_created_metrics()
HTTP_REQUESTS = Counter("hpcinfra_http_requests", "HTTP requests answered by the API", ["method", "route", "status"])
HTTP_LATENCY = Histogram(
    "hpcinfra_http_request_duration_seconds",
    "Time the API took to answer, from the request's arrival to the end of its response",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
UNMATCHED_ROUTE = "<unmatched>"
access_log = logging.getLogger("hpcinfra.access")


def path_templates(app: Any) -> list[tuple[re.Pattern[str], str]]:
    """The app's path templates (/api/v1/clusters/{clusterId}), each with the pattern of the paths it
    takes: those of its OpenAPI document, plus its top-level routes left out of it. Literal segments
    come first (/clusters/summary before /clusters/{id}). Made once per app, kept on its state."""
    templates = getattr(app.state, "path_templates", None)
    if templates is None:
        paths = set(app.openapi().get("paths", {}))
        paths.update(p for route in app.routes if isinstance(p := getattr(route, "path", None), str))
        ordered = sorted(paths, key=lambda t: (t.count("{"), -len(t)))
        templates = [(re.compile(re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(t))), t) for t in ordered]
        app.state.path_templates = templates
    return templates


def route_template(scope: Scope) -> str:
    """The template a request's path belongs to, never the raw path: ids in labels would make a series
    per object."""
    path = scope["path"]
    return next((t for pattern, t in path_templates(scope["app"]) if pattern.fullmatch(path)), UNMATCHED_ROUTE)


class RequestTelemetry:
    """Outermost middleware of the API: takes or makes the request id (returned as X-Request-ID),
    makes it and the caller's tenant part of every log line written meanwhile, counts and times the
    request, and writes one access line without headers or query string."""

    def __init__(self, app: ASGIApp, quiet_paths: frozenset[str] = frozenset({"/metrics"})) -> None:
        self.app = app
        self.quiet_paths = quiet_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = Headers(scope=scope).get(REQUEST_ID_HEADER, "")
        request_id = incoming if _PLAIN_REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex
        context = RequestContext(request_id, scope.setdefault("state", {}))
        token = current_request.set(context)
        # The request span (when tracing is on) names the request id, to go from a log line to its trace.
        trace.get_current_span().set_attribute("hpcinfra.request_id", request_id)
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            method, route = scope["method"], route_template(scope)
            HTTP_REQUESTS.labels(method, route, str(status)).inc()
            HTTP_LATENCY.labels(method, route).observe(elapsed)
            if scope["path"] not in self.quiet_paths:
                access_log.info(
                    "%s %s %s %.1fms",
                    method,
                    scope["path"],
                    status,
                    elapsed * 1000,
                    extra={"method": method, "path": scope["path"], "route": route, "status": status,
                           "duration_ms": round(elapsed * 1000, 1)},
                )  # fmt: skip
            current_request.reset(token)


def metrics_endpoint(_: Request) -> Response:
    """GET /metrics: the API process's metrics in Prometheus' text format."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


# ---------------------------------------------------------------------------------------------
# Worker: the Temporal runtime's Prometheus endpoint, and the application's activity metrics
# ---------------------------------------------------------------------------------------------

ACTIVITY_OUTCOMES = "hpcinfra_activity_outcomes_total"
PROVISION_SECONDS = "hpcinfra_provision_duration_seconds"
PROVISION_ACTIVITY = "ProvisionCluster"
# Provisioning takes seconds on the simulated provider and up to an hour on a cloud.
PROVISION_BUCKETS = (0.1, 0.5, 1, 5, 15, 30, 60, 120, 300, 600, 900, 1800, 3600)


def worker_runtime(settings: Settings) -> Runtime | None:
    """A Temporal runtime serving Prometheus metrics on the worker metrics port, or None when it is 0."""
    if not settings.worker_metrics_port:
        return None
    bind = f"{settings.worker_metrics_host}:{settings.worker_metrics_port}"
    return Runtime(
        telemetry=TelemetryConfig(
            metrics=PrometheusConfig(
                bind_address=bind, histogram_bucket_overrides={PROVISION_SECONDS: PROVISION_BUCKETS}
            )
        )
    )


class ActivityMetrics(Interceptor):
    """Counts each activity attempt's outcome (completed, failed, retried, cancelled) by activity type,
    and times the provision activity by provider kind, on the runtime's metric meter.

    "retried" is a failed attempt the retry policy will follow with another; "failed" is one it will
    not (a non-retryable error, or the last attempt). `provider_kind` maps a cluster id to its
    provider's kind: the provision activity's input names only the cluster."""

    def __init__(self, meter: MetricMeter, provider_kind: Callable[[str], str | None]) -> None:
        self.outcomes = meter.create_counter(ACTIVITY_OUTCOMES, "Activity attempts by type and outcome")
        self.provision_seconds = meter.create_histogram_float(
            PROVISION_SECONDS, "Duration of provisioning attempts by provider kind and outcome", "s"
        )
        self.provider_kind = provider_kind

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _ActivityMetricsInbound(next, self)


class _ActivityMetricsInbound(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, metrics: ActivityMetrics) -> None:
        super().__init__(next)
        self.metrics = metrics

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        info = temporalio.activity.info()
        started = time.monotonic()
        outcome = ""  # stays empty for an attempt completed later, elsewhere (async completion)
        try:
            result = await self.next.execute_activity(input)
            outcome = "completed"
            return result
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        except Exception as error:
            outcome = activity_outcome(error, info)
            raise
        finally:
            if outcome:
                self.metrics.outcomes.add(1, {"activity_type": info.activity_type, "outcome": outcome})
                if info.activity_type == PROVISION_ACTIVITY:
                    await self._time_provision(input, outcome, time.monotonic() - started)

    async def _time_provision(self, input: ExecuteActivityInput, outcome: str, seconds: float) -> None:
        cluster_id = getattr(input.args[0], "cluster_id", None) if input.args else None
        try:
            kind = await asyncio.to_thread(self.metrics.provider_kind, cluster_id) if cluster_id else None
        except Exception:  # noqa: BLE001 - a metric label is not worth failing an activity over
            kind = None
        self.metrics.provision_seconds.record(seconds, {"provider_kind": kind or "unknown", "outcome": outcome})


def activity_outcome(error: Exception, info: temporalio.activity.Info) -> str:
    """What becomes of an activity attempt that raised `error`, as far as the worker can tell (the
    server may still time the activity out before a retry)."""
    if isinstance(error, CancelledError):
        return "cancelled"
    if isinstance(error, ApplicationError) and error.non_retryable:
        return "failed"
    policy = info.retry_policy
    if policy is not None:
        if policy.maximum_attempts and info.attempt >= policy.maximum_attempts:
            return "failed"
        error_type = error.type if isinstance(error, ApplicationError) and error.type else type(error).__name__
        if error_type in (policy.non_retryable_error_types or ()):
            return "failed"
    return "retried"


def provider_kind_lookup(sessions: Any) -> Callable[[str], str | None]:
    """cluster id -> the kind of its cloud provider (sim, aws, ...), read from the database."""
    from core.models import CloudProvider, Cluster

    def kind(cluster_id: str) -> str | None:
        with sessions() as session:
            cluster = session.get(Cluster, uuid.UUID(cluster_id))
            provider = session.get(CloudProvider, cluster.cloud_provider_id) if cluster else None
            return provider.kind if provider else None

    return kind


# ---------------------------------------------------------------------------------------------
# Traces
# ---------------------------------------------------------------------------------------------

_tracer_provider: Any = None


def configure_tracing(settings: Settings, part: str, exporter: Any = None) -> bool:
    """Install the global tracer provider for this process (`part` is api or worker), exporting to
    the configured place (or to `exporter`, for tests). Returns whether tracing is on. Nothing is
    installed when it is off. A process gets one provider: later calls keep the first."""
    global _tracer_provider
    if settings.otel_exporter == "none" and exporter is None:
        return False
    if _tracer_provider is not None:
        return True
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    if exporter is None and settings.otel_exporter == "console":
        # One span per line, so it can be read by the same tools as the logs.
        exporter = ConsoleSpanExporter(formatter=lambda span: span.to_json(indent=None) + os.linesep)
    elif exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()  # OTEL_EXPORTER_OTLP_ENDPOINT and friends configure it
    service = os.environ.get("OTEL_SERVICE_NAME") or f"hpcinfra-{part}"
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _tracer_provider = provider
    return True


def tracing_on(settings: Settings) -> bool:
    return settings.otel_exporter != "none" or _tracer_provider is not None


def client_interceptors(settings: Settings) -> Sequence[Any]:
    """Interceptors for a Temporal client: the tracing one when tracing is on (a worker built on the
    client uses it too), none otherwise."""
    if not tracing_on(settings):
        return []
    from temporalio.contrib.opentelemetry import TracingInterceptor

    return [TracingInterceptor()]


def fastapi_telemetry() -> dict[str, Any]:
    """FastAPI's own OpenTelemetry support makes the request spans (named by method and route
    template) once a tracer provider is installed; scrapes of /metrics are left out."""
    return {"exclude": lambda scope: scope.get("path") == "/metrics"}
