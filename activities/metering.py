"""The metering activity: read a cluster's utilisation from its provider and record its minutes."""

import asyncio
import logging
import uuid
from collections.abc import Callable
from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.clusters import find_cluster
from hpcinfra import credits, metering
from hpcinfra.db import transaction
from hpcinfra.messages import Collection, CollectRequest
from infra.providers.base import ClusterSpec, Provider, ProviderFailure, Utilisation

log = logging.getLogger(__name__)


class MeteringActivities:
    def __init__(self, sessions: sessionmaker[Session], load: Callable[[str], tuple[ClusterSpec, Provider]]) -> None:
        self.sessions = sessions
        # The cluster's spec and provider (ClusterActivities.load).
        self.load = load

    @activity.defn(name="CollectMetrics")
    async def collect(self, request: CollectRequest) -> Collection:
        """Record the cluster's minutes since the last collection, up to `request.now`. Utilisation the
        provider cannot give (its monitoring API down, say) is carried forward from the last reading:
        the minutes are still recorded and charged, as the cluster still had what it had."""
        span, outputs = await asyncio.to_thread(self._pending, request)
        readings: dict[datetime, Utilisation] = {}
        if span is not None:
            try:
                spec, provider = await asyncio.to_thread(self.load, request.cluster_id)
                readings = await provider.utilisation(spec, outputs, span.start, span.end)
            except (ProviderFailure, ApplicationError) as e:
                log.warning("cluster %s: no utilisation for %s to %s: %s", request.cluster_id, span.start, span.end, e)
        return await asyncio.to_thread(self._record, request, readings)

    def _pending(self, request: CollectRequest) -> tuple[metering.Window | None, dict]:
        with self.sessions() as session:
            cluster = find_cluster(session, request.cluster_id)
            return metering.window(cluster, request.now), dict(cluster.outputs)

    def _record(self, request: CollectRequest, readings: dict[datetime, Utilisation]) -> Collection:
        cluster_id = uuid.UUID(request.cluster_id)
        with transaction(self.sessions) as session:
            span = metering.record(session, cluster_id, request.now, readings)
        with self.sessions() as session:
            cluster = find_cluster(session, request.cluster_id)
            standing = credits.standing(session, cluster.tenant_id)
            stop_reason = None
            if standing.exhausted and standing.policy == "stop" and cluster.status == "available":
                stop_reason = (
                    f"stopped: the tenant's credit balance is {credits.as_credits(standing.balance)} and its budget "
                    "policy is 'stop'; an admin can grant credits (POST /tenants/{tenantId}/credits)"
                )
            return Collection(
                minutes=span.minutes if span else 0,
                finished=metering.finished(cluster),
                stop_reason=stop_reason,
            )
