"""The `hpcinfra` administration commands, run as a person runs them, against the test database."""

import os
import subprocess
import sys
import uuid

import pytest

from tests.utils.servers import executable


def hpcinfra(db, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HPCINFRA_DATABASE_URL": db.url}
    return subprocess.run([executable("hpcinfra"), *args], env=env, capture_output=True, text=True, timeout=60)


def last_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def test_tenant_user_and_provider_set_up_from_the_command_line(stack, api):
    db = stack.db
    name = f"acme-{uuid.uuid4().hex[:6]}"
    tenant_id = uuid.UUID(last_line(hpcinfra(db, "tenants", "create", name)))
    token = last_line(
        hpcinfra(
            db,
            "users",
            "create",
            "--tenant",
            name,
            "--email",
            "Ada@Acme.example",
            "--name",
            "Ada",
            "--role",
            "it_manager",
        )
    )
    provider_id = last_line(
        hpcinfra(db, "providers", "create", "--tenant", name, "--name", "lab", "--kind", "sim", "--region", "eu-1",
                 "--config", '{"stepSeconds": 0}')
    )  # fmt: skip

    me = api.get("/me", headers={"Authorization": f"Bearer {token}"}).json()
    assert (me["email"], me["role"], me["tenantId"]) == ("ada@acme.example", "it_manager", str(tenant_id))
    providers = api.get("/cloud-providers", headers={"Authorization": f"Bearer {token}"}).json()
    assert [(p["id"], p["kind"], p["region"], p["config"]) for p in providers] == [
        (provider_id, "sim", "eu-1", {"stepSeconds": 0})
    ]

    second = last_line(hpcinfra(db, "users", "token", "--tenant", name, "--email", "ada@acme.example"))
    assert second != token
    assert api.get("/me", headers={"Authorization": f"Bearer {second}"}).status_code == 200


def test_tokens_are_stored_only_as_hashes(stack):
    name = f"acme-{uuid.uuid4().hex[:6]}"
    hpcinfra(stack.db, "tenants", "create", name)
    token = last_line(
        hpcinfra(
            stack.db,
            "users",
            "create",
            "--tenant",
            name,
            "--email",
            "a@b.example",
            "--name",
            "A",
            "--role",
            "cad_manager",
        )
    )
    with stack.db.engine.connect() as connection:
        dump = "\n".join(str(row) for row in connection.exec_driver_sql("SELECT * FROM api_tokens"))
    assert token not in dump
    assert token[len("hpci_") :] not in dump


@pytest.mark.parametrize(
    "args, message",
    [
        (
            [
                "users",
                "create",
                "--tenant",
                "no-such-tenant",
                "--email",
                "a@b.example",
                "--name",
                "A",
                "--role",
                "it_manager",
            ],
            "no tenant named",
        ),
        (
            ["providers", "create", "--tenant", "no-such-tenant", "--name", "x", "--kind", "sim", "--region", "r"],
            "no tenant named",
        ),
        (
            ["providers", "create", "--tenant", "TENANT", "--name", "x", "--kind", "openstack", "--region", "r"],
            "kind must be one of",
        ),
        (
            [
                "providers",
                "create",
                "--tenant",
                "TENANT",
                "--name",
                "x",
                "--kind",
                "sim",
                "--region",
                "r",
                "--config",
                "{",
            ],
            "not valid JSON",
        ),
        (
            [
                "users",
                "create",
                "--tenant",
                "TENANT",
                "--email",
                "not-an-address",
                "--name",
                "A",
                "--role",
                "it_manager",
            ],
            "not an e-mail address",
        ),
        (
            ["users", "create", "--tenant", "TENANT", "--email", "a@b.example", "--name", "A", "--role", "boss"],
            "role must be one of",
        ),
        (["tenants", "create", "TENANT"], "exists already"),
    ],
)
def test_bad_input_is_refused_with_a_message_and_changes_nothing(stack, args, message):
    name = f"acme-{uuid.uuid4().hex[:6]}"
    last_line(hpcinfra(stack.db, "tenants", "create", name))
    with stack.db.engine.connect() as connection:
        before = [
            connection.exec_driver_sql(f"SELECT count(*) FROM {t}").scalar()
            for t in ("tenants", "users", "cloud_providers")
        ]
    result = hpcinfra(stack.db, *[name if a == "TENANT" else a for a in args])
    assert result.returncode == 1
    assert message in result.stderr
    with stack.db.engine.connect() as connection:
        after = [
            connection.exec_driver_sql(f"SELECT count(*) FROM {t}").scalar()
            for t in ("tenants", "users", "cloud_providers")
        ]
    assert after == before


def test_db_upgrade_is_repeatable(db):
    for _ in range(2):
        assert "up to date" in last_line(hpcinfra(db, "db", "upgrade"))


def test_help_lists_the_commands():
    result = subprocess.run([sys.executable, "-m", "hpcinfra", "--help"], capture_output=True, text=True, timeout=60)
    for command in ("dev", "api", "worker", "db", "tenants", "users", "providers"):
        assert command in result.stdout


def test_migrations_build_exactly_the_models_schema(fresh_db):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from hpcinfra.models import Base

    with fresh_db.engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []


def test_credits_granted_and_a_budget_policy_set_from_the_command_line(stack, api):
    db = stack.db
    name = f"acme-{uuid.uuid4().hex[:6]}"
    tenant_id = last_line(hpcinfra(db, "tenants", "create", name, "--budget-policy", "stop"))
    token = last_line(
        hpcinfra(db, "users", "create", "--tenant", name, "--email", "it@a.example", "--name", "It", "--role", "it_manager")
    )  # fmt: skip
    it = {"Authorization": f"Bearer {token}"}

    assert last_line(hpcinfra(db, "credits", "grant", "--tenant", name, "--amount", "2500.5", "--note", "pilot")) == (
        "12500.5"  # on top of the opening grant
    )
    account = api.get(f"/tenants/{tenant_id}/credits", headers=it).json()
    assert account["balance"] == 12500.5 and account["policy"] == "stop"
    assert [(e["kind"], e["amount"], e["note"]) for e in account["entries"]] == [
        ("grant", 2500.5, "pilot"),
        ("grant", 10000, "opening grant"),
    ]
    hpcinfra(db, "credits", "policy", "--tenant", name, "flag")
    assert api.get(f"/tenants/{tenant_id}/credits", headers=it).json()["policy"] == "flag"

    for args, complaint in [
        (("grant", "--tenant", name, "--amount", "lots"), "must be a number"),
        (("grant", "--tenant", name, "--amount", "-3"), "a grant must be"),
        (("grant", "--tenant", name, "--amount", "0.0000001"), "at most 6 decimals"),
        (("grant", "--tenant", "nobody", "--amount", "5"), "no tenant named"),
        (("policy", "--tenant", name, "pause"), "must be one of flag, stop"),
    ]:
        refused = hpcinfra(db, "credits", *args)
        assert refused.returncode == 1 and complaint in refused.stderr, (args, refused.stderr)
    assert api.get(f"/tenants/{tenant_id}/credits", headers=it).json()["balance"] == 12500.5
