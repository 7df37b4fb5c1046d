"""The credit estimate every request and cluster shows: its rate, and the tenant's runway without it
and with it."""

import uuid

from sqlalchemy.orm import Session

from api.schemas import CreditEstimate
from core.enums import ClusterStatus, RequestStatus
from core.models import Cluster, ClusterRequest
from services import credits

# A cluster that may still start (its runway "after" includes it) and one that is metered now.
_STARTING = (ClusterStatus.PENDING, ClusterStatus.PROVISIONING)


class Estimates:
    """Estimates for one response: each tenant's standing is read once, however many rows it has."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self._standings: dict[uuid.UUID, credits.Standing] = {}

    def of_cluster(self, cluster: Cluster) -> CreditEstimate:
        """At its rate now while it is available (an elastic cluster's follows its nodes up), else at its most."""
        floor = credits.rate_of(cluster, cluster.min_nodes) if cluster.min_nodes is not None else None
        standing = self._standing(cluster.tenant_id)
        if cluster.status == ClusterStatus.AVAILABLE:
            rate = credits.rate_of(cluster, cluster.nodes_charged)
            return _estimate(rate, standing, before=standing.rate - rate, after=standing.rate, floor=floor)
        rate = credits.rate_of(cluster)
        if cluster.status in _STARTING:
            return _estimate(rate, standing, before=standing.rate, after=standing.rate + rate, floor=floor)
        return _estimate(rate, standing, before=standing.rate, after=standing.rate, floor=floor)

    def of_request(self, request: ClusterRequest) -> CreditEstimate:
        """At its most (every node up), and for an elastic cluster at its floor too: the range it may cost."""
        rate = credits.rate_of_request(request)
        floor = credits.rate_of_request(request, request.min_nodes) if request.min_nodes is not None else None
        standing = self._standing(request.tenant_id)
        # Once decided, the request changes nothing more: an approved one's cluster shows its own estimate.
        after = standing.rate + rate if request.status == RequestStatus.PENDING else standing.rate
        return _estimate(rate, standing, before=standing.rate, after=after, floor=floor)

    def _standing(self, tenant_id: uuid.UUID) -> credits.Standing:
        if tenant_id not in self._standings:
            self._standings[tenant_id] = credits.standing(self.session, tenant_id)
        return self._standings[tenant_id]


def _estimate(rate: int, standing: credits.Standing, *, before: int, after: int, floor: int | None) -> CreditEstimate:
    return CreditEstimate(
        rate_per_hour=credits.as_rate(rate),
        runway_days_before=credits.runway_days(standing.balance, before),
        runway_days_after=credits.runway_days(standing.balance, after),
        min_rate_per_hour=None if floor is None else credits.as_rate(floor),
    )
