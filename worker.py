"""The Temporal worker: registers the workflows and activities and polls the task queue."""

import asyncio
import logging
import secrets
import signal
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy.orm import Session, sessionmaker
from temporalio.worker import Worker

from activities.clusters import ClusterActivities
from activities.metering import MeteringActivities
from activities.requests import RequestActivities
from hpcinfra.credentials import credential_box, kept_secret
from hpcinfra.db import make_engine, make_session_factory
from hpcinfra.search_attributes import SearchAttributesMissing, ensure_registered
from hpcinfra.settings import Settings, get_settings
from hpcinfra.temporal import connect
from infra.providers import ProviderSettings
from workflows.cluster import ClusterWorkflow
from workflows.metering import MeteringWorkflow
from workflows.request import RequestWorkflow
from workflows.resume import resume_workflows

WORKFLOWS = [RequestWorkflow, ClusterWorkflow, MeteringWorkflow]


def build_activities(settings: Settings, sessions: sessionmaker[Session] | None = None) -> list:
    sessions = sessions or make_session_factory(make_engine(settings.sqlalchemy_url))
    requests = RequestActivities(sessions, settings.budget_min_runway_hours)
    clusters = ClusterActivities(sessions, credential_box(settings), provider_settings(settings))
    metering = MeteringActivities(sessions, clusters.load)
    return [
        requests.record_decision,
        requests.add_note,
        clusters.record_step,
        clusters.set_status,
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
        metering.collect,
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
    )


async def run(settings: Settings) -> None:
    client = await connect(settings, wait_seconds=60)
    try:
        registered = await ensure_registered(client, settings.temporal_namespace)
    except SearchAttributesMissing as e:
        raise SystemExit(f"error: {e}") from None
    if registered:
        logging.getLogger(__name__).info("search attributes registered: %s", ", ".join(registered))
    sessions = make_session_factory(make_engine(settings.sqlalchemy_url))
    resumed = await resume_workflows(client, sessions, settings)
    logging.getLogger(__name__).info("workflows resumed: %s", resumed)
    with ThreadPoolExecutor(max_workers=32) as executor:
        worker = Worker(
            client,
            task_queue=settings.task_queue,
            workflows=WORKFLOWS,
            activities=build_activities(settings, sessions),
            activity_executor=executor,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        logging.getLogger(__name__).info(
            "worker polling task queue %r at %s", settings.task_queue, settings.temporal_address
        )
        async with worker:
            await stop.wait()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(run(get_settings()))


if __name__ == "__main__":
    main()
