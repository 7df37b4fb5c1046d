"""The Temporal worker: registers the workflows and activities and polls the task queue."""

import asyncio
import logging
import secrets
import signal
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy.orm import Session, sessionmaker
from temporalio.client import Client
from temporalio.runtime import Runtime
from temporalio.worker import Interceptor, Worker

from activities.clusters import ClusterActivities
from activities.metering import MeteringActivities
from activities.requests import RequestActivities
from activities.webhooks import WebhookActivities
from core import observability
from core.credentials import credential_box, kept_secret
from core.db import make_engine, make_session_factory
from core.search_attributes import SearchAttributesMissing, ensure_registered
from core.settings import Settings, get_settings
from core.temporal import connect
from infra.providers import ProviderSettings
from services.credits import keep_standing_rates
from services.leases import LeasePolicy
from services.outbox import DeliveryStarter, Outbox
from services.resume import resume_workflows, sweep_unstarted
from workflows.cluster import ClusterWorkflow
from workflows.metering import MeteringWorkflow
from workflows.request import RequestWorkflow
from workflows.webhooks import WebhookDeliveryWorkflow

WORKFLOWS = [RequestWorkflow, ClusterWorkflow, MeteringWorkflow, WebhookDeliveryWorkflow]


def build_activities(
    settings: Settings, sessions: sessionmaker[Session] | None = None, client: Client | None = None
) -> list:
    """The activities; with `client` (and a running event loop), those that tell of events start their
    webhook deliveries themselves; without, deliveries wait for the next resume (services/resume.py)."""
    sessions = sessions or make_session_factory(make_engine(settings.sqlalchemy_url), hooks=[keep_standing_rates])
    box = credential_box(settings)
    starter = DeliveryStarter(client, settings, asyncio.get_running_loop()) if client is not None else None
    outbox = Outbox(starter, settings.budget_min_runway_hours)
    requests = RequestActivities(sessions, settings.budget_min_runway_hours, outbox, settings.signal_decisions, box)
    clusters = ClusterActivities(
        sessions, box, provider_settings(settings), outbox, settings.budget_min_runway_hours, LeasePolicy.of(settings)
    )
    metering = MeteringActivities(sessions, clusters.describe, outbox)
    webhooks = WebhookActivities(sessions, box, settings.webhook_timeout_seconds, settings.webhook_allowed_networks)
    return [
        requests.record_decision,
        requests.add_note,
        clusters.record_step,
        clusters.set_status,
        clusters.admit_retry,
        clusters.mark_item_failed,
        clusters.provision,
        clusters.destroy,
        clusters.check_health,
        clusters.install_tool,
        clusters.start_service,
        clusters.stop_services,
        clusters.register_tool,
        clusters.register_service,
        clusters.pending_installs,
        clusters.extend_lease,
        clusters.note_lease,
        clusters.admit_resize,
        clusters.drain_nodes,
        clusters.resize,
        metering.collect,
        webhooks.deliver,
        webhooks.record_failure,
    ]


def provider_settings(settings: Settings) -> ProviderSettings:
    passphrase = settings.pulumi_passphrase
    if not passphrase and settings.env == "development":
        passphrase = kept_secret(settings.data_dir / "pulumi.passphrase", lambda: secrets.token_urlsafe(32))
    return ProviderSettings(
        data_dir=settings.data_dir.resolve(),  # daemons of local clusters are given absolute paths
        sim_step_seconds=settings.sim_step_seconds,
        stack_backend_url=settings.stack_backend_url,
        stack_secrets_provider=settings.pulumi_secrets_provider,
        stack_passphrase=passphrase,
        allowed_cloud_accounts=tuple(settings.allowed_cloud_accounts),
    )


def observed(settings: Settings, sessions: sessionmaker[Session]) -> tuple[Runtime | None, list[Interceptor]]:
    """The worker's metrics (a runtime serving them on HPCINFRA_WORKER_METRICS_PORT, and the interceptor
    that records the application's) and traces (see core/observability.py)."""
    observability.configure_tracing(settings, "worker")
    runtime = observability.worker_runtime(settings)
    if runtime is None:
        return None, []
    return runtime, [observability.ActivityMetrics(runtime.metric_meter, observability.provider_kind_lookup(sessions))]


async def run(settings: Settings) -> None:
    sessions = make_session_factory(make_engine(settings.sqlalchemy_url), hooks=[keep_standing_rates])
    runtime, interceptors = observed(settings, sessions)
    client = await connect(settings, wait_seconds=60, runtime=runtime)
    try:
        registered = await ensure_registered(client, settings.temporal_namespace)
    except SearchAttributesMissing as e:
        raise SystemExit(f"error: {e}") from None
    if registered:
        logging.getLogger(__name__).info("search attributes registered: %s", ", ".join(registered))
    resumed = await resume_workflows(client, sessions, settings)
    logging.getLogger(__name__).info("workflows resumed: %s", resumed)
    with ThreadPoolExecutor(max_workers=32) as executor:
        worker = Worker(
            client,
            task_queue=settings.task_queue,
            workflows=WORKFLOWS,
            activities=build_activities(settings, sessions, client),
            activity_executor=executor,
            max_cached_workflows=settings.worker_max_cached_workflows,
            interceptors=interceptors,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        logging.getLogger(__name__).info(
            "worker polling task queue %r at %s", settings.task_queue, settings.temporal_address
        )
        async with worker:
            sweep = asyncio.create_task(sweep_unstarted(client, sessions, settings))
            await stop.wait()
            sweep.cancel()


def main() -> None:
    settings = get_settings()
    observability.configure_logging(settings)
    asyncio.run(run(settings))


if __name__ == "__main__":
    main()
