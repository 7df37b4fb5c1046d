"""Every bad input gets a 4xx with a message a person can act on, and changes nothing.

For each bad input to POST /requests, POST /clusters, PATCH /requests/{id}, POST /requests/{id}/notes
and the lists, this file proves (on SQLite and on PostgreSQL) that the API answers with the exact
status code, as `application/problem+json` whose `detail` names the offending field or value, and
that the tenant's requests (and their statuses), clusters, notes and cloud providers in the database
are untouched.
It also proves the edges of what is accepted: a 63-character name is a valid cluster name, and the
fields the server owns (id, status, requestedBy, ...) are ignored rather than refused.
"""

import json
import uuid

import pytest
from sqlalchemy import func, select

from core import catalog
from core.models import CloudProvider, Cluster, ClusterRequest, RequestNote
from harness.world import file_request, insert_cluster, make_tenant, request_body

MISSING = object()
RANDOM_UUID = "5b0b6f0e-4f5a-4c38-9d55-0d3c1f7c2a11"
LIMIT = 1_000_000
CREATE = ["/requests", "/clusters"]


def snapshot(stack, tenant) -> tuple:
    """What a bad input must not change: the tenant's requests with their statuses, clusters, notes, providers."""
    tid = uuid.UUID(tenant.id)
    with stack.db.sessions() as s:
        requests = s.execute(
            select(ClusterRequest.id, ClusterRequest.status).where(ClusterRequest.tenant_id == tid)
        ).all()
        clusters = s.scalar(select(func.count()).select_from(Cluster).where(Cluster.tenant_id == tid))
        notes = s.scalar(
            select(func.count()).select_from(RequestNote).join(ClusterRequest, RequestNote.request_id == ClusterRequest.id)
            .where(ClusterRequest.tenant_id == tid)
        )  # fmt: skip
        providers = s.scalar(select(func.count()).select_from(CloudProvider).where(CloudProvider.tenant_id == tid))
    return sorted((str(i), st) for i, st in requests), clusters, notes, providers


def assert_problem(response, status: int, *mentions: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json"), (response.headers, response.text)
    detail = response.json().get("detail")
    assert isinstance(detail, str) and detail.strip(), response.text
    for word in mentions:
        assert word in detail, f"{word!r} not in detail {detail!r}"


def body_with(provider_id: str, path: str, value) -> dict:
    """The valid request_body with the value at a dotted path replaced (or removed, for MISSING)."""
    body = request_body(provider_id)
    *parents, last = path.split(".")
    target = body
    for key in parents:
        target = target[key]
    if value is MISSING:
        del target[last]
    else:
        target[last] = value
    return body


NAME = ("name", "lower-case")
BAD_BODIES = [
    # wrong types
    ("size.numberOfNodes", "3", ("numberOfNodes",)),
    ("size.numberOfNodes", 2.5, ("numberOfNodes",)),
    ("size", [2, "small"], ("size",)),
    ("tools", {"name": "iverilog", "version": "12.0"}, ("tools",)),
    ("tools", [{"name": "iverilog"}], ("tools.0.version",)),
    ("services", [{"name": "postgresql", "version": "16", "config": "x"}], ("services.0.config",)),
    # not in the catalog
    ("size.nodeType", "gigantic", ("gigantic", *catalog.NODE_TYPES)),
    ("tools", [{"name": "vivado", "version": "2024.1"}], ("vivado",)),
    ("tools", [{"name": "iverilog", "version": "99.9"}], ("iverilog", "99.9")),
    ("services", [{"name": "mysql", "version": "8"}], ("mysql",)),
    ("services", [{"name": "postgresql", "version": "9.6"}], ("postgresql", "9.6")),
    ("tools", [{"name": "iverilog", "version": "12.0"}, {"name": "iverilog", "version": "11.0"}], ("tools",)),
    # out of range
    ("size.numberOfNodes", 0, ("numberOfNodes",)),
    ("size.numberOfNodes", 65, ("numberOfNodes",)),
    ("size.storage", 5, ("storage",)),
    # names that cannot be cloud resource names
    ("name", "", NAME),
    ("name", "Bad_Name", NAME),
    ("name", "UPPER", NAME),
    ("name", "-lead", NAME),
    ("name", "trail-", NAME),
    ("name", "1abc", NAME),
    ("name", "a" * 64, NAME),
    ("name", "abc\n", NAME),  # a regex's `$` would let a trailing newline through
    # cloud providers that are not the tenant's, or not ids at all
    ("cloudProviderId", RANDOM_UUID, ("cloudProviderId", RANDOM_UUID)),
    ("cloudProviderId", "not-a-uuid", ("cloudProviderId",)),
    # missing required fields
    ("name", MISSING, ("name",)),
    ("size", MISSING, ("size",)),
    ("cloudProviderId", MISSING, ("cloudProviderId",)),
]


@pytest.mark.parametrize("endpoint", CREATE)
@pytest.mark.parametrize(
    ("path", "value", "mentions"),
    BAD_BODIES,
    ids=[f"{p}=<missing>" if v is MISSING else f"{p}={v!r:.45}" for p, v, _ in BAD_BODIES],
)
def test_bad_body_is_refused(api, stack, tenant, endpoint, path, value, mentions):
    before = snapshot(stack, tenant)
    r = api.post(endpoint, json=body_with(tenant.provider_id, path, value), headers=tenant.cad.headers)
    assert_problem(r, 422, *mentions)
    assert snapshot(stack, tenant) == before


@pytest.mark.parametrize("endpoint", CREATE)
def test_another_tenants_provider_is_refused(api, stack, tenant, other_tenant, endpoint):
    before, others_before = snapshot(stack, tenant), snapshot(stack, other_tenant)
    r = api.post(endpoint, json=request_body(other_tenant.provider_id), headers=tenant.cad.headers)
    assert_problem(r, 422, "cloudProviderId", other_tenant.provider_id)
    assert snapshot(stack, tenant) == before
    assert snapshot(stack, other_tenant) == others_before


MALFORMED = [
    pytest.param(b'{"name": ', "JSON", id="truncated"),
    pytest.param(b'{"name": "x"} trailing', "JSON", id="trailing-garbage"),
    pytest.param(b"[]", "object", id="array"),
    pytest.param(b"null", "object", id="null"),
    pytest.param(b'{"name": "\xff\xfe"}', "JSON", id="not-utf8"),
]


@pytest.mark.parametrize("endpoint", CREATE)
@pytest.mark.parametrize(("content", "mention"), MALFORMED)
def test_malformed_json_is_refused(api, stack, tenant, endpoint, content, mention):
    before = snapshot(stack, tenant)
    r = api.post(endpoint, content=content, headers={**tenant.cad.headers, "content-type": "application/json"})
    assert_problem(r, 422, mention)
    assert snapshot(stack, tenant) == before


def post_oversized(api, tenant, endpoint: str, transfer: str):
    """POST a valid JSON body of about 2 MB (a 2 MB name), with Content-Length or chunked."""
    payload = api.build_request("POST", endpoint, json=request_body(tenant.provider_id, name="a" * 2_000_000)).content
    assert len(payload) > LIMIT
    headers = {**tenant.cad.headers, "content-type": "application/json"}
    if transfer == "chunked":
        r = api.post(
            endpoint, content=(payload[i : i + 65_536] for i in range(0, len(payload), 65_536)), headers=headers
        )
        assert r.request.headers.get("transfer-encoding") == "chunked" and "content-length" not in r.request.headers
    else:
        r = api.post(endpoint, content=payload, headers=headers)
        assert r.request.headers["content-length"] == str(len(payload))
    return r


@pytest.mark.parametrize("endpoint", CREATE)
@pytest.mark.parametrize("transfer", ["content-length", "chunked"])
def test_oversized_body_is_refused(api, stack, tenant, endpoint, transfer):
    before = snapshot(stack, tenant)
    assert post_oversized(api, tenant, endpoint, transfer).status_code == 413
    assert snapshot(stack, tenant) == before


@pytest.mark.parametrize("endpoint", CREATE)
@pytest.mark.parametrize("transfer", ["content-length", "chunked"])
def test_oversized_body_answer_says_what_the_limit_is(api, tenant, endpoint, transfer):
    r = post_oversized(api, tenant, endpoint, transfer)
    assert_problem(r, 413)
    assert any(limit in r.json()["detail"] for limit in ("1000000", "1,000,000", "1 MB", "1MB")), r.text


@pytest.mark.parametrize("endpoint", CREATE)
def test_a_63_character_name_is_accepted(api, stack, tenant, endpoint):
    name = "a" + uuid.uuid4().hex + "-" + "b" * 29  # 1 + 32 + 1 + 29 = 63
    assert len(name) == 63
    r = api.post(endpoint, json=request_body(tenant.provider_id, name=name), headers=tenant.cad.headers)
    assert r.status_code == 201, r.text
    assert r.json()["name"] == name


@pytest.mark.parametrize(
    ("decision", "mentions"),
    [
        ({"status": "maybe"}, ("status",)),
        ({}, ("status",)),
        ({"status": "rejected"}, ("rejectionReason",)),
        ({"status": "rejected", "rejectionReason": None}, ("rejectionReason",)),
        ({"status": "rejected", "rejectionReason": "   "}, ("rejectionReason",)),
    ],
    ids=["unknown-status", "no-status", "reject-without-reason", "reject-null-reason", "reject-blank-reason"],
)
def test_bad_decision_leaves_the_request_pending(api, stack, tenant, decision, mentions):
    request = file_request(api, tenant.cad, tenant.provider_id)
    before = snapshot(stack, tenant)
    r = api.patch(f"/requests/{request['id']}", json=decision, headers=tenant.it.headers)
    assert_problem(r, 422, *mentions)
    assert snapshot(stack, tenant) == before
    again = api.get(f"/requests/{request['id']}", headers=tenant.it.headers).json()
    assert again["status"] == "pending" and again["approvedBy"] is None and again["rejectionReason"] is None


@pytest.mark.parametrize(
    "note", [{"note": ""}, {"note": "   "}, {}, {"note": 5}], ids=["empty", "spaces", "missing", "number"]
)
def test_bad_note_is_refused(api, stack, tenant, note):
    request = file_request(api, tenant.cad, tenant.provider_id)
    before = snapshot(stack, tenant)
    r = api.post(f"/requests/{request['id']}/notes", json=note, headers=tenant.cad.headers)
    assert_problem(r, 422, "note")
    assert snapshot(stack, tenant) == before
    assert api.get(f"/requests/{request['id']}/notes", headers=tenant.cad.headers).json() == []


BAD_QUERIES = [
    ("/requests?status=bogus", "status"),
    ("/clusters?status=bogus", "status"),
    ("/requests?requestedBy=not-a-uuid", "requestedBy"),
    ("/clusters?cloudProviderId=not-a-uuid", "cloudProviderId"),
    *[(f"{lst}?{q}", q.split("=")[0]) for lst in CREATE for q in ("limit=0", "limit=100000", "offset=-1", "limit=ten")],
]


@pytest.mark.parametrize(("url", "mention"), BAD_QUERIES, ids=[u for u, _ in BAD_QUERIES])
def test_bad_list_query_is_refused(api, stack, tenant, url, mention):
    file_request(api, tenant.cad, tenant.provider_id)
    before = snapshot(stack, tenant)
    assert_problem(api.get(url, headers=tenant.it.headers), 422, mention)
    assert snapshot(stack, tenant) == before


BAD_PATHS = [
    ("GET", "/requests/not-a-uuid", None),
    ("GET", "/requests/not-a-uuid/notes", None),
    ("POST", "/requests/not-a-uuid/notes", {"note": "hello"}),
    ("PATCH", "/requests/not-a-uuid", {"status": "approved"}),
    ("GET", "/clusters/not-a-uuid", None),
    ("GET", "/clusters/not-a-uuid/tools", None),
    ("GET", "/clusters/not-a-uuid/services", None),
    ("GET", "/clusters/not-a-uuid/events", None),
]


@pytest.mark.parametrize(("method", "url", "body"), BAD_PATHS, ids=[f"{m} {u}" for m, u, _ in BAD_PATHS])
def test_path_id_that_is_not_a_uuid_is_refused(api, stack, tenant, method, url, body):
    before = snapshot(stack, tenant)
    r = api.request(method, url, json=body, headers=tenant.it.headers if method == "PATCH" else tenant.cad.headers)
    assert_problem(r, 422, "UUID")
    assert snapshot(stack, tenant) == before


NUL_FIELDS = ["note", "rejectionReason", "name"]


@pytest.mark.parametrize("field", NUL_FIELDS)
def test_text_with_a_nul_character_is_refused(api, stack, tenant, field):
    """Text PostgreSQL cannot store must be refused the same way on every database, not be a 5xx."""
    request = file_request(api, tenant.cad, tenant.provider_id)
    before = snapshot(stack, tenant)
    method, url, body, who = {
        "note": ("POST", f"/requests/{request['id']}/notes", {"note": "a\x00b"}, tenant.cad),
        "rejectionReason": (
            "PATCH",
            f"/requests/{request['id']}",
            {"status": "rejected", "rejectionReason": "no\x00"},
            tenant.it,
        ),
        "name": ("POST", "/cloud-providers", {"name": "a\x00b", "kind": "sim", "region": "r-1"}, tenant.it),
    }[field]
    assert_problem(api.request(method, url, json=body, headers=who.headers), 422, field)
    assert snapshot(stack, tenant) == before


def test_server_owned_fields_are_ignored(api, stack, tenant):
    forged = {
        "id": RANDOM_UUID,
        "status": "approved",
        "requestedBy": {"id": tenant.it.id, "name": "it", "email": tenant.it.email, "role": "it_manager"},
        "approvedBy": {"id": tenant.it.id, "name": "it", "email": tenant.it.email, "role": "it_manager"},
        "requestedAt": "2001-01-01T00:00:00Z",
        "approvedAt": "2001-01-02T00:00:00Z",
        "notes": [{"time": "2001-01-01T00:00:00Z", "by": {"id": tenant.it.id}, "note": "pre-approved"}],
    }
    r = api.post("/requests", json=request_body(tenant.provider_id, **forged), headers=tenant.cad.headers)
    assert r.status_code == 201, r.text
    made = r.json()
    assert made["id"] != RANDOM_UUID
    assert made["status"] == "pending"
    assert made["requestedBy"]["id"] == tenant.cad.id
    assert made["approvedBy"] is None and made["approvedAt"] is None
    assert made["notes"] == []
    assert not made["requestedAt"].startswith("2001")
    with stack.db.sessions() as s:
        row = s.get(ClusterRequest, uuid.UUID(made["id"]))
        assert row is not None and s.get(ClusterRequest, uuid.UUID(RANDOM_UUID)) is None
        assert (row.status, str(row.requested_by_id), row.approved_by_id, row.notes) == (
            "pending",
            tenant.cad.id,
            None,
            [],
        )


@pytest.mark.parametrize("action", ["\x00v", "Request.Approve", "request approve"])
def test_an_audit_filter_that_is_no_action_name_is_refused(api, tenant, action):
    """Found by schemathesis: a NUL in the filter was a 500 on PostgreSQL, which refuses NUL in text."""
    r = api.get("/audit", params={"action": action}, headers=tenant.it.headers)
    assert r.status_code == 422, r.text
    assert "action" in r.json()["detail"]


# JSON text, not objects: the test's own encoder would run out of stack on them as the API's check did.
def deep_config(depth: int) -> str:
    return '{"a": ' * depth + "{}" + "}" * depth


LARGE_CONFIG = '{"k": [' + ", ".join(["1"] * 20_000) + "]}"


@pytest.mark.parametrize(
    ("endpoint", "config_at"),
    [("/requests", "services"), ("/clusters", "services"), ("/cloud-providers", "config")],
)
@pytest.mark.parametrize(
    ("config", "mention"),
    [
        (deep_config(100), "nested"),
        (deep_config(900), "nested"),
        (deep_config(950), "nested"),
        (LARGE_CONFIG, "values"),
    ],
    ids=["100-deep", "900-deep", "950-deep", "20000-values"],
)
def test_a_config_too_deep_or_too_large_is_refused(api, stack, tenant, endpoint, config_at, config, mention):
    """A free-form `config` (a service's, a provider's) is checked without recursion: nesting a few hundred
    levels deep was a 500 (the stack ran out), and is a 422 that says how deep a config may be (or, nested
    deeper than the JSON parser reads, that the body is nested too deeply)."""
    before = snapshot(stack, tenant)
    if config_at == "services":
        body, who = request_body(tenant.provider_id), tenant.cad
        body["services"] = [{"name": "postgresql", "version": "16", "config": "CONFIG"}]
    else:
        body, who = {"name": "deep", "kind": "sim", "region": "sim-1", "config": "CONFIG"}, tenant.it
    content = json.dumps(body).replace('"CONFIG"', config).encode()
    r = api.post(endpoint, content=content, headers={**who.headers, "content-type": "application/json"})
    assert_problem(r, 422, mention)
    assert snapshot(stack, tenant) == before


def test_json_nested_beyond_the_parser_is_refused(api, stack, tenant):
    before = snapshot(stack, tenant)
    content = b'{"name": "x", "config": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    r = api.post("/cloud-providers", content=content, headers={**tenant.it.headers, "content-type": "application/json"})
    assert 400 <= r.status_code < 500, r.text
    assert snapshot(stack, tenant) == before


def test_a_version_the_clusters_provider_does_not_offer_is_refused(api, stack):
    """The catalog lists every version, but a local provider installs Debian's one only (versionsByProvider):
    asking it for another was accepted and failed at install time; it is a 422 that names what it offers,
    for requests, direct creates and tools or services added later."""
    world = make_tenant(stack.db.sessions, extra_providers={"here": {"kind": "local"}})
    local = world.providers["here"]
    before = snapshot(stack, world)
    wrong = [
        ({"tools": [{"name": "iverilog", "version": "12.0"}]}, ("iverilog 12.0", "local", "11.0")),
        ({"tools": [], "services": [{"name": "postgresql", "version": "16"}]}, ("postgresql 16", "local", "15")),
        ({"tools": [{"name": "openroad", "version": "2.0"}]}, ("openroad 2.0", "no openroad")),
    ]
    for endpoint in CREATE:
        for overrides, mentions in wrong:
            r = api.post(endpoint, json=request_body(local, **overrides), headers=world.cad.headers)
            assert_problem(r, 422, *mentions)
    assert snapshot(stack, world) == before

    cluster = insert_cluster(
        stack.db.sessions, world, "local-one", status="available", cloud_provider_id=uuid.UUID(local)
    )
    r = api.post(f"/clusters/{cluster.id}/tools", json={"name": "yosys", "version": "0.40"}, headers=world.cad.headers)
    assert_problem(r, 422, "yosys 0.40", "0.23")
    r = api.post(
        f"/clusters/{cluster.id}/services", json={"name": "redis", "version": "7.2"}, headers=world.cad.headers
    )
    assert_problem(r, 422, "redis 7.2", "7.0")
    with stack.db.sessions() as s:
        assert s.get(Cluster, cluster.id).tools == [] and s.get(Cluster, cluster.id).services == []

    offered = {
        "tools": [{"name": "iverilog", "version": "11.0"}],
        "services": [{"name": "postgresql", "version": "15"}],
    }
    assert api.post("/requests", json=request_body(local, **offered), headers=world.cad.headers).status_code == 201
