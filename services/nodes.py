"""A cluster's compute nodes and their power: which are up now, and the spans each was charged.

A static cluster (no scaling) has every node up while it is available, and keeps no rows here. An
elastic one has its first `min_nodes` nodes up while it is available, and the rest as its provider powers
them up for queued jobs and down once idle (core.providers.PowerChange, read with each metering
collection: activities/metering.py). Each change is a line in the cluster's step log and a
`cluster.node_changed` event for the tenant's webhooks, in the transaction that records it.

A node is charged from the moment it starts powering up until it is down (NodeState.charged), as a
cloud bills an instance; `Cluster.nodes_charged` counts the nodes charged now, for the standing rates.
"""

import math
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from core.enums import ClusterStatus, NodeState
from core.models import Cluster, ClusterEvent, ClusterNode, NodeUptime
from core.providers import PowerChange, Scaling, node_names

MINUTE = timedelta(minutes=1)


@dataclass(frozen=True)
class NodeView:
    """A node as the API shows it."""

    name: str
    state: NodeState


def scaling_of(cluster: Cluster) -> Scaling | None:
    if cluster.min_nodes is None:
        return None
    return Scaling(cluster.min_nodes, cluster.idle_seconds)


def floor_of(cluster: Cluster) -> int:
    return cluster.number_of_nodes if cluster.min_nodes is None else cluster.min_nodes


def nodes_of(cluster: Cluster) -> list[NodeView]:
    """Every node of the cluster and its power now."""
    if cluster.min_nodes is not None and cluster.nodes:
        return [NodeView(node.name, NodeState(node.state)) for node in cluster.nodes]
    up = cluster.status == ClusterStatus.AVAILABLE
    floor = floor_of(cluster) if up else 0
    return [
        NodeView(name, NodeState.UP if i < floor else NodeState.DOWN)
        for i, name in enumerate(node_names(cluster.number_of_nodes))
    ]


def came_up(session: Session, cluster: Cluster, at: datetime) -> None:
    """The cluster became available at `at`: its floor is up (charged from then), the rest down."""
    if cluster.min_nodes is None:
        return
    existing, spans = {node.name: node for node in cluster.nodes}, _open_spans(session, cluster)
    for position, name in enumerate(node_names(cluster.number_of_nodes)):
        node = existing.get(name)
        if node is None:
            node = ClusterNode(name=name, position=position, changed_at=at)
            cluster.nodes.append(node)
        state = NodeState.UP if position < cluster.min_nodes else NodeState.DOWN
        _set(session, cluster, spans, node, state, at)
    _count_charged(cluster)


def went_away(session: Session, cluster: Cluster, at: datetime) -> None:
    """The cluster stopped being available at `at`: none of its nodes is charged from then on."""
    if cluster.nodes:  # a static cluster keeps no spans
        spans = _open_spans(session, cluster)
        for node in cluster.nodes:
            _set(session, cluster, spans, node, NodeState.DOWN, at)
    _count_charged(cluster)


def resized(session: Session, cluster: Cluster, at: datetime) -> None:
    """The cluster, available, was resized at `at` (its size and scaling already the new ones): a node it no
    longer has stops being charged; of an elastic one's, a new node is down and its floor is up."""
    spans = _open_spans(session, cluster)
    names = set(node_names(cluster.number_of_nodes))
    for node in list(cluster.nodes):
        if node.name not in names or cluster.min_nodes is None:  # a static cluster keeps no rows
            _set(session, cluster, spans, node, NodeState.DOWN, at)
            cluster.nodes.remove(node)
    if cluster.min_nodes is None:
        _count_charged(cluster)
        return
    existing = {node.name: node for node in cluster.nodes}
    for position, name in enumerate(node_names(cluster.number_of_nodes)):
        node = existing.get(name)
        if node is None:
            node = ClusterNode(name=name, position=position, state=NodeState.DOWN, changed_at=at)
            cluster.nodes.append(node)
        if position < cluster.min_nodes:
            _set(session, cluster, spans, node, NodeState.UP, at)
    _count_charged(cluster)


def apply(session: Session, cluster: Cluster, changes: Iterable[PowerChange]) -> list[tuple[PowerChange, int]]:
    """Record what the provider saw of the elastic nodes' power; returns the changes that were new, each
    with the nodes charged once it was made (a
    change older than the node's last one, or to the state it is in, as when a collection is retried,
    changes nothing; nor do changes of nodes below the floor, which are up whenever the cluster is)."""
    by_name, spans = {node.name: node for node in cluster.nodes}, _open_spans(session, cluster)
    applied = []
    for change in changes:
        node = by_name.get(change.node)
        if node is None or node.position < floor_of(cluster) or change.at < node.changed_at:
            continue
        if node.state == change.state:
            continue
        _set(session, cluster, spans, node, change.state, change.at)
        _log(session, cluster, change)
        applied.append((change, _count_charged(cluster)))
    return applied


def _open_spans(session: Session, cluster: Cluster) -> dict[str, NodeUptime]:
    """The cluster's charged spans still open, by node: one query, however many nodes change."""
    query = select(NodeUptime).where(NodeUptime.cluster_id == cluster.id, NodeUptime.up_to.is_(None))
    return {span.node: span for span in session.scalars(query)}


def _set(
    session: Session, cluster: Cluster, spans: dict[str, NodeUptime], node: ClusterNode, state: NodeState, at: datetime
) -> None:
    """Move a node to `state` at `at`, opening or closing its charged span (kept in `spans`)."""
    span = spans.get(node.name)
    if state.charged and span is None:
        spans[node.name] = NodeUptime(cluster_id=cluster.id, node=node.name, up_from=at)
        session.add(spans[node.name])
    elif not state.charged and span is not None:
        span.up_to = at
        del spans[node.name]
    node.state, node.changed_at = state, at


def _count_charged(cluster: Cluster) -> int:
    cluster.nodes_up = sum(NodeState(node.state).charged for node in cluster.nodes)
    return cluster.nodes_up


def _log(session: Session, cluster: Cluster, change: PowerChange) -> None:
    # One line per node and moment: the key is made from them, so the same change is never logged twice.
    key = uuid.uuid5(cluster.id, f"power {change.node} {change.state} {change.at.isoformat()}")
    session.add(
        ClusterEvent(
            key=key,
            cluster_id=cluster.id,
            step="node",
            status=change.state,
            message=f"{change.node} is {change.state}",
            time=change.at,
        )
    )


def charged_per_minute(session: Session, cluster: Cluster, start: datetime, end: datetime) -> list[int]:
    """How many nodes were charged in each minute of [start, end): all of a static cluster's, and of an
    elastic cluster's each node up at any moment of the minute (a minute begun is a minute charged)."""
    minutes = int((end - start) / MINUTE)
    if cluster.min_nodes is None:
        return [cluster.number_of_nodes] * minutes
    spans = session.execute(
        select(NodeUptime.node, NodeUptime.up_from, NodeUptime.up_to).where(
            NodeUptime.cluster_id == cluster.id,
            NodeUptime.up_from < end,
            or_(NodeUptime.up_to.is_(None), NodeUptime.up_to > start),
        )
    ).all()
    charged: list[set[str]] = [set() for _ in range(minutes)]
    for node, up_from, up_to in spans:
        first = max(0, math.floor((up_from - start) / MINUTE))
        last = minutes if up_to is None else min(minutes, math.ceil((up_to - start) / MINUTE))
        for minute in range(first, last):
            charged[minute].add(node)
    return [len(nodes) for nodes in charged]
