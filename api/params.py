"""Path parameters, named as the contract names them."""

import uuid
from typing import Annotated

from fastapi import Path

RequestId = Annotated[uuid.UUID, Path(alias="requestId")]
ClusterId = Annotated[uuid.UUID, Path(alias="clusterId")]
ServiceId = Annotated[uuid.UUID, Path(alias="serviceId")]
TenantId = Annotated[uuid.UUID, Path(alias="tenantId")]
