"""The custom search attributes hpcinfra's workflows carry, so that operators can find the runs of
one tenant or one cluster in the Temporal web UI or with `temporal workflow list --query`.

Every Temporal server the workers use must know them (Keyword attributes); the names here are the
single source for the dev stack, the tests and the production compose file. A workflow started or
upserting with an attribute the server does not know fails (a start is refused, an upsert stalls the
workflow task), so the worker checks them when it starts and registers the missing ones
(`ensure_registered`), or refuses to start, naming the commands that register them.

Workflow code imports this module for the keys and `labels`; only `ensure_registered` does I/O, and
only the worker calls it.
"""

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes
from temporalio.service import RPCError, RPCStatusCode

TENANT = SearchAttributeKey.for_keyword("HpcinfraTenant")
CLUSTER_ID = SearchAttributeKey.for_keyword("HpcinfraClusterId")
KIND = SearchAttributeKey.for_keyword("HpcinfraKind")
STATUS = SearchAttributeKey.for_keyword("HpcinfraStatus")

ALL = (TENANT, CLUSTER_ID, KIND, STATUS)

# The values of KIND, one per workflow type: ClusterRequest, Cluster, ClusterMetering.
REQUEST, CLUSTER, METERING = "request", "cluster", "metering"
# The request's STATUS when nobody decided in time (the API shows it as `rejected`, with the reason).
EXPIRED = "expired"


def labels(
    kind: str, tenant_id: str | None, cluster_id: str | None = None, status: str | None = None
) -> TypedSearchAttributes:
    """The attributes a workflow starts with; what is not known (None) is left out."""
    values = ((KIND, kind), (TENANT, tenant_id), (CLUSTER_ID, cluster_id), (STATUS, status))
    return TypedSearchAttributes([SearchAttributePair(key, value) for key, value in values if value is not None])


def dev_server_flags() -> list[str]:
    """`temporal server start-dev` arguments that register the attributes on a dev server."""
    return [arg for key in ALL for arg in ("--search-attribute", f"{key.name}=Keyword")]


def create_commands(namespace: str) -> list[str]:
    """The commands an operator runs to register the attributes on a Temporal cluster."""
    return [
        f"temporal operator search-attribute create --namespace {namespace} --name {key.name} --type Keyword"
        for key in ALL
    ]


class SearchAttributesMissing(RuntimeError):
    """The server lacks some of the attributes and this client may not register them."""


async def ensure_registered(client: Client, namespace: str) -> list[str]:
    """Register the attributes the namespace does not know yet; returns the names registered.

    Raises SearchAttributesMissing, with the commands that fix it, when they cannot be registered (no
    permission, a server that refuses) or one exists with another type."""
    wanted = {key.name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD for key in ALL}
    try:
        listed = await client.operator_service.list_search_attributes(ListSearchAttributesRequest(namespace=namespace))
        known = dict(listed.custom_attributes)
    except RPCError as e:
        if e.status != RPCStatusCode.UNIMPLEMENTED:
            raise _missing(namespace, f"the server's search attributes could not be read ({e.message})") from e
        known = {}  # the time-skipping test server cannot list them, but does register them (again, harmlessly)
    wrong = [name for name, kind in known.items() if name in wanted and kind != wanted[name]]
    if wrong:
        raise _missing(namespace, f"{', '.join(wrong)} exist(s) with another type than Keyword; remove them first")
    missing = {name: kind for name, kind in wanted.items() if name not in known}
    if not missing:
        return []
    try:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=namespace, search_attributes=missing)
        )
    except RPCError as e:
        raise _missing(namespace, f"{', '.join(missing)} could not be registered ({e.message})") from e
    return sorted(missing)


def _missing(namespace: str, why: str) -> SearchAttributesMissing:
    commands = "\n  ".join(create_commands(namespace))
    return SearchAttributesMissing(
        f"hpcinfra's search attributes are not usable in Temporal namespace {namespace!r}: {why}. "
        f"Workflows would stall on them. Register them as a Temporal administrator:\n  {commands}"
    )
