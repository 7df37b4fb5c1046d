"""The metering activity: read a cluster's utilisation from its provider and record its minutes."""

import asyncio
import logging
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker
from temporalio import activity

from activities.clusters import find_cluster
from core.db import transaction
from core.enums import ClusterStatus
from core.messages import Collection, CollectRequest
from core.providers import ClusterSpec, Provider, Utilisation
from services import credits, metering
from services.outbox import Outbox

log = logging.getLogger(__name__)

# The clouds publish a minute's metrics some minutes after it: the window is read from this far back, so
# the newest reading published stands for the minutes not published yet.
LOOKBACK = timedelta(minutes=15)
# After a long outage, utilisation is read for the last day of the window only (the minutes before it
# carry the reading before them); every minute is still recorded and charged.
LONGEST_READ = timedelta(days=1)


class MeteringActivities:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        describe: Callable[..., tuple[ClusterSpec, Provider]],
        webhooks: Outbox | None = None,
    ) -> None:
        self.sessions = sessions
        # The cluster's spec and provider (ClusterActivities.describe).
        self.describe = describe
        # balance.low for the tenant's webhooks, checked with each collection (services/outbox.py).
        self.webhooks = webhooks

    @activity.defn(name="CollectMetrics")
    async def collect(self, request: CollectRequest) -> Collection:
        """Record the cluster's minutes since the last collection, up to `request.now`. Utilisation is
        best effort: what the provider cannot give (its monitoring API down, a minute not published yet)
        carries the reading before it forward, and the minutes are recorded and charged all the same,
        as the cluster had what it had."""
        pending = await asyncio.to_thread(self._pending, request)
        readings: dict[datetime, Utilisation] = {}
        if pending is not None and pending[2] is not None:
            span, outputs, (spec, provider) = pending
            read_from = max(span.start - LOOKBACK, span.end - LONGEST_READ)
            try:
                readings = await provider.utilisation(spec, outputs, read_from, span.end)
            except Exception as e:  # noqa: BLE001 - whatever the provider's failure, the minutes are charged
                log.warning("cluster %s: no utilisation for %s to %s: %s", request.cluster_id, read_from, span.end, e)
        return await asyncio.to_thread(self._record, request, readings)

    def _pending(
        self, request: CollectRequest
    ) -> tuple[metering.Window, dict, tuple[ClusterSpec, Provider] | None] | None:
        """The minutes to record (None when there are none), the cluster's outputs, and its spec and
        provider to read utilisation from (None when there is no provider to read from now)."""
        with self.sessions() as session:
            cluster = find_cluster(session, request.cluster_id)
            span = metering.window(cluster, request.now)
            if span is None:
                return None
            try:
                reader = self.describe(session, cluster, with_secrets=False)
            except Exception as e:  # noqa: BLE001 - the minutes are recorded and charged all the same
                log.warning("cluster %s: no provider to read utilisation from: %s", request.cluster_id, e)
                reader = None
            return span, dict(cluster.outputs), reader

    def _record(self, request: CollectRequest, readings: dict[datetime, Utilisation]) -> Collection:
        cluster_id = uuid.UUID(request.cluster_id)
        with transaction(self.sessions) as session:
            span = metering.record(session, cluster_id, request.now, readings)
            cluster = find_cluster(session, request.cluster_id)
            balance, policy = credits.account(session, cluster.tenant_id)
            stop_reason = None
            if balance <= 0 and policy == "stop" and cluster.status == ClusterStatus.AVAILABLE:
                stop_reason = (
                    f"stopped: the tenant's credit balance is {credits.as_credits(balance)} and its budget "
                    "policy is 'stop'; an admin can grant credits (POST /tenants/{tenantId}/credits)"
                )
            if self.webhooks is not None:
                self.webhooks.check_balance(session, cluster.tenant_id)
            return Collection(
                minutes=span.minutes if span else 0,
                finished=metering.finished(cluster),
                stop_reason=stop_reason,
            )
