"""The `hpcinfra` administration commands, run as a person runs them, against the test database."""

import os
import subprocess
import sys
import uuid

import pytest
import sqlalchemy as sa

from api.oidc import Identity, OidcError, user_for_identity
from core.models import AuditEvent, CloudProvider, User
from harness.servers import executable
from harness.world import make_tenant


def hpcinfra(db, *args: str, **settings: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HPCINFRA_DATABASE_URL": db.url, **settings}
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


def test_a_provider_made_from_the_command_line_is_held_to_the_allowed_accounts(db):
    world = make_tenant(db.sessions)
    account = "123456789012"
    config = f'{{"sshCidr": "198.51.100.0/24", "accountId": "{account}"}}'

    def create(name: str, allowed: str) -> subprocess.CompletedProcess:
        return hpcinfra(db, "providers", "create", "--tenant", world.name, "--name", name, "--kind", "aws",
                        "--region", "r-1", "--config", config, HPCINFRA_ALLOWED_CLOUD_ACCOUNTS=allowed)  # fmt: skip

    # An account the list leaves out, and another tenant's: refused, with the reason, and nothing made.
    for name, allowed in (("unlisted", '["aws:210987654321"]'), ("theirs", f'["other-tenant/aws:{account}"]')):
        refused = create(name, allowed)
        assert refused.returncode == 1, refused.stdout
        says = f"accountId '{account}' is not one of the accounts HPCINFRA_ALLOWED_CLOUD_ACCOUNTS allows"
        assert says in refused.stderr and "other-tenant" not in refused.stderr, refused.stderr
    with db.sessions() as session:
        made = session.scalars(sa.select(CloudProvider.name).where(CloudProvider.tenant_id == uuid.UUID(world.id)))
        assert set(made) == {"sim"}
    assert last_line(create("ours", f'["{world.name}/aws:{account}"]'))


def test_db_upgrade_is_repeatable(db):
    for _ in range(2):
        assert "up to date" in last_line(hpcinfra(db, "db", "upgrade"))


def test_help_lists_the_commands():
    result = subprocess.run([sys.executable, "-m", "cli", "--help"], capture_output=True, text=True, timeout=60)
    for command in ("dev", "api", "worker", "db", "tenants", "users", "providers"):
        assert command in result.stdout


def test_migrations_build_exactly_the_models_schema(fresh_db):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from core.models import Base

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
    # The tenant's own leases (tests/test_leases.py has what they do); unset, the operator's settings.
    assert last_line(hpcinfra(db, "tenants", "leases", name, "--max-hours", "48")) == (
        f"leases of {name}: default 0 h (0: none), longest 48 h (0: no limit)"
    )
    cleared = hpcinfra(db, "tenants", "leases", name, "--from-settings", HPCINFRA_LEASE_MAX_HOURS="720")
    assert last_line(cleared).endswith("longest 720 h (0: no limit)")

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


# --- linking users to identity provider accounts ---------------------------------------------------

ISSUER = "https://idp.example.com/realms/acme"
# The identity provider the platform trusts, whose issuer `users link-oidc` takes when given none.
OIDC = {
    "HPCINFRA_OIDC_ISSUER": ISSUER,
    "HPCINFRA_OIDC_AUDIENCE": "hpcinfra",
    "HPCINFRA_OIDC_JWKS_URL": "https://idp.example.com/realms/acme/certs",
}


def sign_in(db, tenant: str, email: str, subject: str, issuer: str = ISSUER) -> User:
    """The user an OIDC token for this account signs in as (what api.oidc does once the token verifies)."""
    return user_for_identity(
        db.sessions,
        Identity(issuer=issuer, subject=subject, tenant=tenant, email=email, role="it_manager", name="Ada"),
    )


def audit_actions(db, tenant_id: str) -> list[tuple[str, str, str, dict]]:
    with db.sessions() as session:
        events = session.scalars(
            sa.select(AuditEvent).where(AuditEvent.tenant_id == uuid.UUID(tenant_id)).order_by(AuditEvent.id)
        )
        return [(e.action, e.target, e.source, e.detail) for e in events if e.action.endswith("-oidc")]


def test_a_user_made_with_api_tokens_is_linked_to_an_identity_provider_account_and_unlinked(db):
    world = make_tenant(db.sessions)  # its users were made with API tokens, linked to no account
    subject = f"sub-{uuid.uuid4()}"
    with pytest.raises(OidcError, match="not linked to the identity provider"):
        sign_in(db, world.name, world.it.email, subject)

    linked = hpcinfra(db, "users", "link-oidc", "--tenant", world.name, "--email", world.it.email,
                      "--subject", subject, **OIDC)  # fmt: skip
    assert linked.returncode == 0, linked.stderr
    assert subject in linked.stdout and ISSUER in linked.stdout
    assert str(sign_in(db, world.name, world.it.email, subject).id) == world.it.id

    # Linking it again changes nothing; an account at another identity provider takes the place of the first.
    again = hpcinfra(db, "users", "link-oidc", "--tenant", world.name, "--email", world.it.email,
                     "--subject", subject, **OIDC)  # fmt: skip
    assert again.returncode == 0 and "already" in again.stdout, again.stderr
    other_issuer = "https://login.example.org"
    relinked = hpcinfra(db, "users", "link-oidc", "--tenant", world.name, "--email", world.it.email,
                        "--subject", subject, "--issuer", other_issuer)  # fmt: skip
    assert relinked.returncode == 0, relinked.stderr
    assert str(sign_in(db, world.name, world.it.email, subject, other_issuer).id) == world.it.id
    with pytest.raises(OidcError, match="is linked to another account"):
        sign_in(db, world.name, world.it.email, subject)

    unlinked = hpcinfra(db, "users", "unlink-oidc", "--tenant", world.name, "--email", world.it.email)
    assert unlinked.returncode == 0, unlinked.stderr
    with pytest.raises(OidcError, match="not linked to the identity provider"):
        sign_in(db, world.name, world.it.email, subject, other_issuer)
    twice = hpcinfra(db, "users", "unlink-oidc", "--tenant", world.name, "--email", world.it.email)
    assert twice.returncode == 0 and "not linked" in twice.stdout, twice.stderr

    target = f"user {world.it.id}"
    assert audit_actions(db, world.id) == [
        ("user.link-oidc", target, "cli", {"issuer": ISSUER, "subject": subject}),
        (
            "user.link-oidc",
            target,
            "cli",
            {"issuer": other_issuer, "subject": subject, "replaced_issuer": ISSUER, "replaced_subject": subject},
        ),
        ("user.unlink-oidc", target, "cli", {"issuer": other_issuer, "subject": subject}),
    ]


def test_linking_an_account_that_is_taken_or_malformed_is_refused_and_changes_nothing(db):
    world = make_tenant(db.sessions)
    taken = f"sub-{uuid.uuid4()}"
    first = hpcinfra(db, "users", "link-oidc", "--tenant", world.name, "--email", world.cad.email,
                     "--subject", taken, **OIDC)  # fmt: skip
    assert first.returncode == 0, first.stderr

    def links() -> list[tuple]:
        with db.sessions() as session:
            users = session.scalars(sa.select(User).where(User.tenant_id == uuid.UUID(world.id)).order_by(User.email))
            return [(u.email, u.oidc_issuer, u.oidc_subject) for u in users]

    before, audited = links(), audit_actions(db, world.id)
    for options, settings, complaint in [
        (["--subject", taken], OIDC, f"is linked to user {world.cad.email}"),
        (["--subject", taken, "--issuer", ISSUER], {}, f"is linked to user {world.cad.email}"),
        (["--subject", ""], OIDC, "needs a subject"),
        (["--subject", "   "], OIDC, "needs a subject"),
        (["--subject", "s" * 256], OIDC, "at most 255 characters"),
        (["--subject", "sub", "--issuer", "https://idp.example/" + "i" * 2030], {}, "at most 2048 characters"),
        (["--subject", "sub"], {"HPCINFRA_OIDC_ISSUER": ""}, "--issuer"),
        (["--subject", "sub", "--email", "nobody@x.example"], OIDC, "has no user"),
    ]:
        email = [] if "--email" in options else ["--email", world.it.email]
        refused = hpcinfra(db, "users", "link-oidc", "--tenant", world.name, *email, *options, **settings)
        assert refused.returncode == 1, (options, refused.stdout)
        assert refused.stderr.startswith("error: ") and complaint in refused.stderr, (options, refused.stderr)
    assert links() == before
    assert audit_actions(db, world.id) == audited
