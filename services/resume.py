"""Starting, from the database, the workflows that should be running and may not be (client-side code:
the worker and the API run it when they start, and the worker every HPCINFRA_RESUME_EVERY_SECONDS; no
workflow imports it).

- A request still `pending` whose workflow never started: the API that wrote it stopped before it could
  start the workflow, or Temporal refused the start. Its expiry counts from when it was filed.
- A cluster still `pending`, likewise: made without approval, or approved (its request's workflow starts
  it right after the decision; one approved more than START_GRACE ago whose workflow did not start, as
  when an operator ended the request's workflow, is started here).
- An `available` cluster without metering: available from before metering existed, or its metering
  was terminated by an operator (when a process starts only).
- A webhook delivery never attempted: the process that wrote it could not start its workflow
  (services/outbox.py).

Each is started as core/starts.py starts it, with `repair`: a workflow that runs is left alone, so
running this any number of times, from any number of processes, starts each at most once.

The periodic sweep (`sweep_unstarted`) is run by one worker at a time, whichever holds the `sweeps` row's
lease, and looks only at what was written since the last sweep (less a margin for clocks that differ
between hosts): its cost follows what is new, not how many requests wait for a decision. It also deletes
the Idempotency-Keys past their time.
"""

import asyncio
import logging
import os
import socket
import uuid
from datetime import datetime, timedelta

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session, sessionmaker
from temporalio.client import Client

from core import starts
from core.db import transaction
from core.enums import ClusterStatus, RequestStatus
from core.models import Cluster, ClusterRequest, IdempotencyKey, Sweep, utcnow
from core.settings import Settings
from services import outbox

# How long after its approval a cluster is left for its request's workflow to start.
START_GRACE = timedelta(seconds=30)
# How far back of the last sweep the next one looks: rows written by hosts whose clocks are behind.
CLOCK_MARGIN = timedelta(minutes=5)
SWEEP = "resume"
log = logging.getLogger(__name__)


async def resume_workflows(
    client: Client, sessions: sessionmaker[Session], settings: Settings, *, since: datetime | None = None
) -> dict[str, int]:
    """Start what should run; returns how many of each kind were asked for (running ones included).
    With `since`, only what was written from then on (the periodic sweep), and no metering."""
    requests, clusters, metered = await asyncio.to_thread(_what_should_run, sessions, settings.request_expiry, since)
    queue = settings.task_queue
    for request_id, tenant_id, left in requests:
        await starts.start(client, queue, starts.request(request_id, tenant_id, left), repair=True)
    for cluster_id, tenant_id in clusters:
        await starts.start(client, queue, starts.cluster(cluster_id, tenant_id), repair=True)
    for cluster_id, tenant_id in metered:
        await starts.start(client, queue, starts.metering(cluster_id, tenant_id), repair=True)
    deliveries = await asyncio.to_thread(outbox.undelivered, sessions, since)
    await outbox.start_deliveries(client, settings, deliveries)
    return {
        "requests": len(requests),
        "clusters": len(clusters),
        "metering": len(metered),
        "webhook deliveries": len(deliveries),
    }


def _what_should_run(
    sessions: sessionmaker[Session], expiry: timedelta, since: datetime | None
) -> tuple[list[tuple[str, str, float]], list[tuple[str, str]], list[tuple[str, str]]]:
    """(request id, tenant id, seconds left before it expires), then (cluster id, tenant id) twice."""
    now = utcnow()
    with transaction(sessions) as session:
        query = select(ClusterRequest.id, ClusterRequest.tenant_id, ClusterRequest.requested_at).where(
            ClusterRequest.status == RequestStatus.PENDING
        )
        if since is not None:
            query = query.where(ClusterRequest.requested_at >= since)
        requests = [
            (str(i), str(t), max(0.0, (expiry - (now - filed)).total_seconds()))
            for i, t, filed in session.execute(query)
        ]
        query = select(Cluster.id, Cluster.tenant_id).where(
            Cluster.status == ClusterStatus.PENDING,
            or_(Cluster.request_id.is_(None), Cluster.created_at < now - START_GRACE),
        )
        if since is not None:
            query = query.where(Cluster.created_at >= since)
        clusters = [(str(i), str(t)) for i, t in session.execute(query)]
        if since is not None:
            return requests, clusters, []
        session.execute(
            update(Cluster)
            .where(Cluster.status == ClusterStatus.AVAILABLE, Cluster.metering_from.is_(None))
            .values(metering_from=now)
        )
        metered = [
            (str(i), str(t))
            for i, t in session.execute(
                select(Cluster.id, Cluster.tenant_id).where(Cluster.status == ClusterStatus.AVAILABLE)
            )
        ]
    return requests, clusters, metered


async def sweep_unstarted(client: Client, sessions: sessionmaker[Session], settings: Settings) -> None:
    """Every `settings.resume_every_seconds`, while this worker holds the sweep's lease, start what was
    written since the last sweep and has no workflow (resume_workflows). Runs until cancelled; a failed
    sweep (Temporal or the database away) is logged and tried again at the next turn, from where the
    last one that finished left off."""
    holder = f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:8]}"
    every = timedelta(seconds=settings.resume_every_seconds)
    while True:
        await asyncio.sleep(every.total_seconds())
        try:
            turn = await asyncio.to_thread(take_turn, sessions, holder, every)
            if turn is None:
                continue  # another worker sweeps
            swept_until, started = turn
            resumed = await resume_workflows(
                client, sessions, settings, since=swept_until - CLOCK_MARGIN if swept_until else None
            )
            await asyncio.to_thread(_swept, sessions, holder, started)
            await asyncio.to_thread(_forget_old_keys, sessions, started)
            if any(resumed.values()):
                log.info("workflows resumed by the sweep: %s", resumed)
        except Exception as e:  # noqa: BLE001 - a blip of Temporal or the database; the next turn tries again
            log.warning("the resume sweep failed, trying again in %s: %s", every, e)


def take_turn(
    sessions: sessionmaker[Session], holder: str, every: timedelta
) -> tuple[datetime | None, datetime] | None:
    """Take (or keep) the sweep's lease for two turns: (up to when the last sweep looked, now), or None
    while another holder's lease runs. A holder that stops lets its lease run out; another takes over."""
    now = utcnow()
    with transaction(sessions) as session:
        taken = session.execute(
            update(Sweep)
            .where(Sweep.name == SWEEP, or_(Sweep.holder == holder, Sweep.held_until.is_(None), Sweep.held_until < now))
            .values(holder=holder, held_until=now + 2 * every)
        ).rowcount
        if not taken:
            return None
        return session.scalar(select(Sweep.swept_until).where(Sweep.name == SWEEP)), now


def _forget_old_keys(sessions: sessionmaker[Session], now: datetime) -> None:
    """Idempotency-Keys past their time: nothing answers from them any more, and the secrets some keep
    (sealed) would otherwise have to be readable by every later `credentials rotate`."""
    with transaction(sessions) as session:
        session.execute(delete(IdempotencyKey).where(IdempotencyKey.created_at < now - IdempotencyKey.KEPT_FOR))


def _swept(sessions: sessionmaker[Session], holder: str, started: datetime) -> None:
    with transaction(sessions) as session:
        session.execute(update(Sweep).where(Sweep.name == SWEEP, Sweep.holder == holder).values(swept_until=started))
