"""A client generated from the served OpenAPI document works: the document is enough to use the API.

openapi-python-client generates a Python package from the live API's /openapi.json (on SQLite and on
PostgreSQL), refusing to generate on any warning (a warning means an operation or a schema it had to
leave out). The tests then import that package and, with it alone, over real HTTP to the real API,
worker and Temporal: file a request with a tool and a service, approve it, and poll the cluster
until it is available with its service running; and get errors back as the document says they come,
as problem documents. The client raises on any status the document does not list.
"""

import importlib
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import httpx
import pytest

from harness.servers import wait_until

PACKAGE = "hpcinfra_client"
# No post-generation hooks (the default runs ruff on the output): what is tested is the generator's own code.
CONFIG = f"package_name_override: {PACKAGE}\npost_hooks: []\n"


@dataclass
class Generated:
    """The generated package, imported, and the document it came from."""

    root: str  # the API's server root: the document's paths start with /api/v1
    document: dict
    package: ModuleType

    def operation(self, tag: str, operation_id: str) -> ModuleType:
        """The module of one operation: `sync_detailed`, `sync`, `asyncio`... as the generator names them."""
        return importlib.import_module(f"{PACKAGE}.api.{tag}.{_snake(operation_id)}")

    @property
    def models(self) -> ModuleType:
        return importlib.import_module(f"{PACKAGE}.models")

    def client(self, token: str):
        return self.package.AuthenticatedClient(
            base_url=self.root, token=token, raise_on_unexpected_status=True, timeout=httpx.Timeout(30)
        )


def _snake(operation_id: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", operation_id).lower()


@pytest.fixture(scope="module")
def generated(stack, tmp_path_factory) -> Iterator[Generated]:
    root = stack.base_url.removesuffix("/api/v1")
    served = httpx.get(f"{root}/openapi.json", timeout=30)
    assert served.status_code == 200, served.text
    work = tmp_path_factory.mktemp("generated-client")
    (work / "openapi.json").write_text(served.text)
    (work / "config.yaml").write_text(CONFIG)
    command = [sys.executable, "-m", "openapi_python_client", "generate", "--path", "openapi.json"]
    command += ["--output-path", str(work / PACKAGE), "--meta", "none", "--config", "config.yaml", "--fail-on-warning"]
    result = subprocess.run(command, cwd=work, capture_output=True, text=True, timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"the generator failed:\n{output}"
    assert not re.search(r"warning|unable to|skipping", output, re.IGNORECASE), f"the generator warned:\n{output}"
    sys.path.insert(0, str(work))
    try:
        yield Generated(root, served.json(), importlib.import_module(PACKAGE))
    finally:
        sys.path.remove(str(work))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(f"{PACKAGE}.")]:
            del sys.modules[name]


def test_every_operation_of_the_document_is_a_function_of_the_client(generated: Generated):
    wanted = {
        (operation["tags"][0], _snake(operation["operationId"]))
        for item in generated.document["paths"].values()
        for operation in item.values()
    }
    api = Path(generated.package.__file__).parent / "api"
    made = {(module.parent.name, module.stem) for module in api.glob("*/*.py") if module.stem != "__init__"}
    assert made == wanted
    for tag, name in wanted:
        assert callable(importlib.import_module(f"{PACKAGE}.api.{tag}.{name}").sync_detailed)


def test_request_approval_and_cluster_through_the_generated_client(generated: Generated, tenant):
    m = generated.models
    cad, it = generated.client(tenant.cad.token), generated.client(tenant.it.token)
    name = f"gen-{uuid.uuid4().hex[:8]}"

    filed = generated.operation("requests", "createRequest").sync_detailed(
        client=cad,
        body=m.RequestIn(
            name=name,
            cloud_provider_id=uuid.UUID(tenant.provider_id),
            size=m.SizeIn(number_of_nodes=2, node_type=m.SizeInNodetype("small")),
            tools=[m.ToolIn(name=m.ToolInName("iverilog"), version="12.0")],
            services=[m.ServiceIn(name=m.ServiceInName("postgresql"), version="16")],
        ),
    )
    assert filed.status_code == 201, filed.content
    request = filed.parsed
    assert isinstance(request, m.ClusterRequest)
    assert request.status == m.ClusterRequestStatus.PENDING
    assert str(request.requested_by.id) == tenant.cad.id
    assert [(t.name, t.version) for t in request.tools] == [("iverilog", "12.0")]

    listed = generated.operation("requests", "listRequests").sync(
        client=it, status=m.ListRequestsStatusType0("pending")
    )
    assert request.id in [r.id for r in listed]

    decided = generated.operation("requests", "decideRequest").sync_detailed(
        request.id, client=it, body=m.DecisionIn(status=m.DecisionInStatus("approved"))
    )
    assert decided.status_code == 200, decided.content
    approved = decided.parsed
    assert approved.status == m.ClusterRequestStatus.APPROVED
    assert str(approved.approved_by.id) == tenant.it.id
    assert isinstance(approved.cluster_id, uuid.UUID)

    get_cluster = generated.operation("clusters", "getCluster")

    def ready():
        cluster = get_cluster.sync(approved.cluster_id, client=cad)
        assert isinstance(cluster, m.Cluster), cluster
        assert cluster.status != m.ClusterStatus.ERROR, cluster.status_reason
        running = cluster.services and cluster.services[0].status == m.ServiceStatus.RUNNING
        return cluster if cluster.status == m.ClusterStatus.AVAILABLE and running else None

    cluster = wait_until(ready, timeout=60, what="the cluster to be available with its service running")
    assert cluster.name == name and str(cluster.request_id) == str(request.id)
    assert [(t.name, t.version) for t in cluster.tools] == [("iverilog", "12.0")]
    assert cluster.size.number_of_nodes == 2 and cluster.size.node_type == "small"
    # Credentials are shown to the cluster's creator, and reach the generated model intact.
    assert {"host", "port", "username", "password"} <= set(cluster.services[0].credentials.additional_properties)


def test_errors_come_back_as_the_documented_problem_type(generated: Generated, tenant):
    m = generated.models
    cad, it = generated.client(tenant.cad.token), generated.client(tenant.it.token)

    missing = uuid.uuid4()
    not_found = generated.operation("clusters", "getCluster").sync_detailed(missing, client=cad)
    assert not_found.status_code == 404
    assert isinstance(not_found.parsed, m.Problem)
    assert not_found.parsed.status == 404 and str(missing) in not_found.parsed.detail

    create_request = generated.operation("requests", "createRequest")
    body = m.RequestIn(
        name="gen-too-big",
        cloud_provider_id=uuid.UUID(tenant.provider_id),
        size=m.SizeIn(number_of_nodes=1000, node_type=m.SizeInNodetype("small")),
    )
    invalid = create_request.sync_detailed(client=cad, body=body)
    assert invalid.status_code == 422
    assert isinstance(invalid.parsed, m.Problem)
    assert [e.field for e in invalid.parsed.errors] == ["size.numberOfNodes"]

    # An IT manager may not file requests: a 403, also documented, also a problem.
    body.size.number_of_nodes = 1
    forbidden = create_request.sync_detailed(client=it, body=body)
    assert forbidden.status_code == 403
    assert isinstance(forbidden.parsed, m.Problem) and "cad_manager" in forbidden.parsed.detail
