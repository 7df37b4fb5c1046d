"""The metering activity: read a cluster's utilisation from its provider and record its minutes."""

import asyncio
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker
from temporalio import activity

from activities.clusters import find_cluster
from core.db import transaction
from core.enums import ClusterStatus
from core.messages import Collection, CollectRequest
from core.models import Cluster
from core.providers import ClusterSpec, PowerChange, Provider, Utilisation
from services import credits, metering, nodes
from services.outbox import Outbox, cluster_changed

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
        """Record what the provider saw of an elastic cluster's nodes' power up to `request.now`, then the
        cluster's minutes since the last collection. Utilisation is best effort: what the provider cannot
        give (its monitoring API down, a minute not published yet) carries the reading before it forward,
        and the minutes are recorded and charged all the same, as the cluster had what it had. Power is
        not: a provider that cannot tell it fails the collection, which is retried, so that no node-minute
        goes uncharged."""
        pending = await asyncio.to_thread(self._pending, request)
        readings: dict[datetime, Utilisation] = {}
        changes: list[PowerChange] = []
        if pending is not None and pending.reader is not None:
            spec, provider = pending.reader
            if spec.scaling is not None and pending.power_since is not None:
                changes = await provider.power_changes(spec, pending.outputs, pending.power_since, request.now)
            if pending.span is not None:
                span = pending.span
                read_from = max(span.start - LOOKBACK, span.end - LONGEST_READ)
                try:
                    readings = await provider.utilisation(spec, pending.outputs, read_from, span.end)
                except Exception as e:  # noqa: BLE001 - whatever the provider's failure, the minutes are charged
                    log.warning(
                        "cluster %s: no utilisation for %s to %s: %s", request.cluster_id, read_from, span.end, e
                    )
        return await asyncio.to_thread(self._record, request, readings, changes)

    def _pending(self, request: CollectRequest) -> "Pending | None":
        """What there is to collect; None when there is nothing."""
        with self.sessions() as session:
            cluster = find_cluster(session, request.cluster_id)
            span = metering.window(cluster, request.now)
            # An elastic cluster's power is read while it is available, from the end of the last minute
            # recorded (a change already recorded is recorded once: services/nodes.py apply).
            elastic = cluster.min_nodes is not None and cluster.status == ClusterStatus.AVAILABLE and cluster.nodes
            since = (cluster.metered_until or cluster.metering_from) if elastic else None
            if span is None and since is None:
                return None
            try:
                reader = self.describe(session, cluster, with_secrets=False)
            except Exception as e:  # noqa: BLE001 - the minutes are recorded and charged all the same
                log.warning("cluster %s: no provider to read utilisation from: %s", request.cluster_id, e)
                reader = None
            return Pending(span, dict(cluster.outputs), reader, since)

    def _record(
        self, request: CollectRequest, readings: dict[datetime, Utilisation], changes: list[PowerChange]
    ) -> Collection:
        cluster_id = uuid.UUID(request.cluster_id)
        with transaction(self.sessions) as session:
            if changes:
                self._apply_power(session, cluster_id, changes)
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

    def _apply_power(self, session: Session, cluster_id: uuid.UUID, changes: list[PowerChange]) -> None:
        """The nodes' power changes, in the step log and for the tenant's webhooks (cluster.node_changed),
        while the cluster is available: the changes a provider reports after its teardown began change nothing."""
        cluster = session.get_one(Cluster, cluster_id, with_for_update={"of": Cluster})
        if cluster.status != ClusterStatus.AVAILABLE:
            return
        for change, nodes_up in nodes.apply(session, cluster, changes):
            if self.webhooks is not None:
                data = {
                    **cluster_changed(cluster),
                    "node": change.node,
                    "state": change.state,
                    "at": change.at.isoformat(),
                    "nodesUp": nodes_up,
                }
                key = f"cluster.node_changed/{cluster_id}/{change.node}/{change.state}/{change.at.isoformat()}"
                self.webhooks.emit(session, cluster.tenant_id, "cluster.node_changed", data, key=key)


@dataclass(frozen=True)
class Pending:
    span: metering.Window | None  # the minutes to record, if any
    outputs: dict
    reader: tuple[ClusterSpec, Provider] | None  # the spec and provider to read from, if there is one now
    power_since: datetime | None  # for an elastic cluster: read its power changes from then on
