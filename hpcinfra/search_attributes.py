"""The custom search attributes hpcinfra's workflows carry, so that operators can find the runs of
one tenant or one cluster in the Temporal web UI or with `temporal workflow list --query`.

Every Temporal server the workers use must know them (Keyword attributes); the names here are the
single source for the dev stack, the tests and the production compose file.
"""

from temporalio.common import SearchAttributeKey

TENANT = SearchAttributeKey.for_keyword("HpcinfraTenant")
CLUSTER_ID = SearchAttributeKey.for_keyword("HpcinfraClusterId")
KIND = SearchAttributeKey.for_keyword("HpcinfraKind")
STATUS = SearchAttributeKey.for_keyword("HpcinfraStatus")

ALL = (TENANT, CLUSTER_ID, KIND, STATUS)
