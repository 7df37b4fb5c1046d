"""Leases: how long a cluster lives. A cluster with `expires_at` warns its tenant a while before (a
step-log line and the `cluster.expiring` webhook event) and is torn down when it is reached, with the
reason on its status: both are durable timers in its workflow (workflows/cluster.py), which an
extension moves. A cluster without a lease of its own gets the default lease, if there is one, from
when it is first available. A lease asked for or extended by a CAD manager is held to the longest
lease; beyond it takes an IT manager: one who extends it, or approves a request that asks for it.
The default and the longest lease are the operator's settings, or the tenant's own where it has them.
"""

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from core.enums import Role
from core.messages import Lease
from core.models import Cluster, Tenant, User, utcnow
from core.refusals import Refused
from core.settings import Settings


@dataclass(frozen=True)
class LeasePolicy:
    """The settings' leases: the default (0: none), the longest a CAD manager may set (0: no limit), and
    how long before its end a lease warns."""

    default_hours: float = 0
    max_hours: float = 0
    warning_minutes: float = 60

    @classmethod
    def of(cls, settings: Settings) -> "LeasePolicy":
        return cls(settings.lease_default_hours, settings.lease_max_hours, settings.lease_warning_minutes)

    def of_tenant(self, tenant: Tenant) -> "LeasePolicy":
        """This policy, with the tenant's own default and longest lease where it has them."""
        default = self.default_hours if tenant.lease_default_hours is None else tenant.lease_default_hours
        longest = self.max_hours if tenant.lease_max_hours is None else tenant.lease_max_hours
        return replace(self, default_hours=default, max_hours=longest)

    def lease(self, expires_at: datetime | None) -> Lease | None:
        if expires_at is None:
            return None
        return Lease(expires_at, expires_at - timedelta(minutes=self.warning_minutes))

    def started(self, cluster: Cluster, now: datetime) -> Lease | None:
        """The cluster's lease once it is available: its own, or the default from `now`."""
        if cluster.expires_at is None and self.default_hours:
            cluster.expires_at = now + timedelta(hours=self.default_hours)
        return self.lease(cluster.expires_at)

    def require_asked(self, expires_at: datetime | None) -> None:
        """Refuse a lease a CAD manager asks for without approval that ends in the past, or beyond the
        longest lease (a request may ask for a longer one: an IT manager approves it)."""
        if expires_at is not None:
            self._require_within(expires_at, "expiresAt", beyond=False)

    def require_extension(self, current: datetime | None, until: datetime, user: User) -> None:
        """Refuse extending a lease to `until` unless it is later than its end now, and (for a CAD manager)
        within the longest lease."""
        if current is not None and until <= current:
            raise Refused(
                "Invalid",
                f"until ({until.isoformat()}) must be later than the lease's end now ({current.isoformat()})",
            )
        self._require_within(until, "until", beyond=user.role != Role.CAD_MANAGER)

    def _require_within(self, end: datetime, field: str, *, beyond: bool) -> None:
        require_future(end, field)
        now = utcnow()
        longest = timedelta(hours=self.max_hours)
        if self.max_hours and end > now + longest and not beyond:
            raise Refused(
                "NotAllowed",
                f"{field} ({end.isoformat()}) is beyond the longest lease, {self.max_hours:g} hours from now "
                f"(until {(now + longest).isoformat(timespec='seconds')}); an IT manager can grant a longer one: "
                "file a request (POST /api/v1/requests), or ask one to extend the cluster",
            )


def require_future(end: datetime | None, field: str = "expiresAt") -> None:
    if end is not None and end <= utcnow():
        raise Refused("Invalid", f"{field} ({end.isoformat()}) is in the past; give a time from now on")
