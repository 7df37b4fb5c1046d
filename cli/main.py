"""The `hpcinfra` command: the embedded stack, the servers, migrations and administration."""

import json
import os
from decimal import Decimal
from typing import Annotated

import typer
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from cli import user
from core import credentials
from core.db import make_engine, make_session_factory, transaction
from core.models import ClusterService, IdempotencyKey, Webhook
from core.refusals import Refused
from core.settings import get_settings
from services import accounts, credits
from services.credits import keep_standing_rates
from services.leases import LeasePolicy
from services.migrations import upgrade

app = typer.Typer(help="hpcinfra: Slurm clusters for chip-design teams.", no_args_is_help=True, add_completion=False)
db_app = typer.Typer(help="The application database.", no_args_is_help=True)
tenants_app = typer.Typer(help="Tenants (one per customer organisation).", no_args_is_help=True)
users_app = typer.Typer(help="Users, their API tokens and their identity provider accounts.", no_args_is_help=True)
providers_app = typer.Typer(help="Cloud providers a tenant provisions on.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(tenants_app, name="tenants")
app.add_typer(users_app, name="users")
app.add_typer(providers_app, name="providers")
credentials_app = typer.Typer(help="The keys that encrypt service credentials.", no_args_is_help=True)
app.add_typer(credentials_app, name="credentials")
user.register(app)  # the user commands, over the HTTP API: requests, clusters, analytics


def _sessions():
    return make_session_factory(make_engine(get_settings().sqlalchemy_url), hooks=[keep_standing_rates])


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


@app.command()
def dev() -> None:
    """Start the embedded stack: Temporal dev server and UI, worker, API, SQLite, sim provider."""
    from cli.devstack import run_dev_stack

    raise typer.Exit(run_dev_stack(get_settings()))


@app.command()
def api() -> None:
    """Serve the HTTP API (HPCINFRA_API_HOST, HPCINFRA_API_PORT)."""
    import uvicorn

    settings = get_settings()
    uvicorn.run("api.main:create_app", factory=True, host=settings.api_host, port=settings.api_port, log_level="info")


@app.command()
def worker() -> None:
    """Run a Temporal worker for the workflows and activities."""
    import worker as worker_module

    worker_module.main()


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply the database migrations."""
    upgrade(get_settings().sqlalchemy_url)
    typer.echo("database is up to date")


@tenants_app.command("create")
def tenants_create(
    name: str,
    budget_policy: Annotated[
        str, typer.Option(help="when the balance reaches zero: flag the clusters, or stop (tear them down)")
    ] = "flag",
) -> None:
    """Create a tenant with its opening grant of credits (HPCINFRA_OPENING_CREDITS); prints its id as the last line."""
    try:
        with transaction(_sessions()) as session:
            tenant = accounts.create_tenant(
                session, name, opening_credits=get_settings().opening_credits, budget_policy=budget_policy
            )
    except ValueError as e:  # an AccountError, or an opening grant the ledger refuses
        _fail(str(e))
    typer.echo(f"created tenant {name}")
    typer.echo(str(tenant.id))


@tenants_app.command("leases")
def tenants_leases(
    name: str,
    default_hours: Annotated[
        float | None, typer.Option(min=0, help="the lease a cluster gets when it asks for none (0: none)")
    ] = None,
    max_hours: Annotated[
        float | None, typer.Option(min=0, help="the longest lease a CAD manager may set or extend to (0: no limit)")
    ] = None,
    from_settings: Annotated[
        bool, typer.Option("--from-settings", help="take both from the operator's settings again")
    ] = False,
) -> None:
    """Set a tenant's own lease policy (hours); what is not given stays as it is."""
    if from_settings and (default_hours is not None or max_hours is not None):
        _fail("--from-settings and --default-hours/--max-hours do not go together")
    try:
        with transaction(_sessions()) as session:
            tenant = accounts.tenant_by_name(session, name)
            if from_settings:
                tenant.lease_default_hours = tenant.lease_max_hours = None
            if default_hours is not None:
                tenant.lease_default_hours = default_hours
            if max_hours is not None:
                tenant.lease_max_hours = max_hours
            policy = LeasePolicy.of(get_settings()).of_tenant(tenant)
    except accounts.AccountError as e:
        _fail(str(e))
    typer.echo(
        f"leases of {name}: default {policy.default_hours:g} h (0: none), longest {policy.max_hours:g} h (0: no limit)"
    )


@users_app.command("create")
def users_create(
    tenant: Annotated[str, typer.Option(help="the tenant's name")],
    email: Annotated[str, typer.Option()],
    name: Annotated[str, typer.Option()],
    role: Annotated[str, typer.Option(help="cad_manager, it_manager or admin")],
) -> None:
    """Create a user; prints a new API token as the last line (it is shown only this once)."""
    try:
        with transaction(_sessions()) as session:
            user = accounts.create_user(
                session, accounts.tenant_by_name(session, tenant), email=email, name=name, role=role
            )
            token = accounts.issue_token(session, user)
    except accounts.AccountError as e:
        _fail(str(e))
    typer.echo(f"created {role} {email} in {tenant} (user id {user.id}); API token, shown only now:")
    typer.echo(token)


@users_app.command("token")
def users_token(
    tenant: Annotated[str, typer.Option(help="the tenant's name")],
    email: Annotated[str, typer.Option()],
) -> None:
    """Issue another API token for an existing user; prints it as the last line."""
    try:
        with transaction(_sessions()) as session:
            user = accounts.user_by_email(session, accounts.tenant_by_name(session, tenant), email)
            token = accounts.issue_token(session, user)
    except accounts.AccountError as e:
        _fail(str(e))
    typer.echo(f"new API token for {email}, shown only now:")
    typer.echo(token)


@users_app.command("link-oidc")
def users_link_oidc(
    tenant: Annotated[str, typer.Option(help="the tenant's name")],
    email: Annotated[str, typer.Option()],
    subject: Annotated[str, typer.Option(help="the account at the identity provider: the `sub` of its tokens")],
    issuer: Annotated[
        str | None, typer.Option(help="the identity provider: the `iss` of its tokens (default: HPCINFRA_OIDC_ISSUER)")
    ] = None,
) -> None:
    """Link an existing user to an identity provider account, whose OIDC sign-in is then this user.

    For users made with API tokens, and users made by OIDC sign-in before accounts were stored. The link
    replaces any account the user was linked to; the provider's tokens then set the user's role and e-mail."""
    issuer = get_settings().oidc_issuer if issuer is None else issuer
    if not issuer:
        _fail("HPCINFRA_OIDC_ISSUER is not set: name the identity provider with --issuer")
    try:
        with transaction(_sessions()) as session:
            user = accounts.user_by_email(session, accounts.tenant_by_name(session, tenant), email)
            linked = accounts.link_oidc_account(session, user, issuer, subject)
    except accounts.AccountError as e:
        _fail(str(e))
    except IntegrityError:  # the unique (issuer, subject) of users: another link took the account meanwhile
        _fail(f"the account {subject!r} of {issuer} was linked to another user at the same moment; nothing changed")
    if not linked:
        typer.echo(f"{email} in {tenant} is linked to the account {subject!r} of {issuer} already; nothing changed")
        return
    typer.echo(f"linked {email} in {tenant} to the account {subject!r} of {issuer}: its OIDC sign-in is this user")


@users_app.command("unlink-oidc")
def users_unlink_oidc(
    tenant: Annotated[str, typer.Option(help="the tenant's name")],
    email: Annotated[str, typer.Option()],
) -> None:
    """Unlink a user from its identity provider account, whose OIDC sign-in is then no longer this user.

    The user's API tokens still work."""
    try:
        with transaction(_sessions()) as session:
            user = accounts.user_by_email(session, accounts.tenant_by_name(session, tenant), email)
            account = accounts.unlink_oidc_account(session, user)
    except accounts.AccountError as e:
        _fail(str(e))
    if account is None:
        typer.echo(f"{email} in {tenant} is not linked to an identity provider account; nothing changed")
        return
    issuer, subject = account
    typer.echo(f"unlinked {email} in {tenant} from the account {subject!r} of {issuer}")


@providers_app.command("create")
def providers_create(
    tenant: Annotated[str, typer.Option(help="the tenant's name")],
    name: Annotated[str, typer.Option()],
    kind: Annotated[str, typer.Option(help="sim, local, aws, gcp or azure")],
    region: Annotated[str, typer.Option()],
    config: Annotated[str, typer.Option(help="the provider's settings as a JSON object")] = "{}",
) -> None:
    """Register a cloud provider for a tenant; prints its id as the last line."""
    try:
        settings_object = json.loads(config)
    except json.JSONDecodeError as e:
        _fail(f"--config is not valid JSON: {e}")
    if not isinstance(settings_object, dict):
        _fail("--config must be a JSON object")
    try:
        with transaction(_sessions()) as session:
            tenant_row = accounts.tenant_by_name(session, tenant)
            # The operator's list binds admins too, as it does in the API.
            provider = accounts.create_provider(
                session,
                tenant_row.id,
                name=name,
                kind=kind,
                region=region,
                config=settings_object,
                allowed_accounts=get_settings().allowed_cloud_accounts,
            )
    except (accounts.AccountError, Refused) as e:
        _fail(str(e))
    typer.echo(f"registered {kind} provider {name} ({region}) for {tenant}")
    typer.echo(str(provider.id))


credits_app = typer.Typer(help="Tenants' credits: grants and budget policy.", no_args_is_help=True)
app.add_typer(credits_app, name="credits")


@credits_app.command("grant")
def credits_grant(
    tenant: Annotated[str, typer.Option(help="the tenant's name")],
    amount: Annotated[str, typer.Option(help="credits to add, e.g. 5000 or 12.5")],
    note: Annotated[str, typer.Option(help="why, for the ledger")] = "granted",
) -> None:
    """Grant credits to a tenant: an entry in its ledger, added to its balance. Prints the new balance last."""
    try:
        credits_amount = Decimal(amount)
    except ArithmeticError:
        _fail(f"--amount must be a number of credits, not {amount!r}")
    if not credits_amount.is_finite():
        _fail("--amount must be a number of credits")
    try:
        with transaction(_sessions()) as session:
            tenant_row = accounts.tenant_by_name(session, tenant)
            credits.grant(session, tenant_row, credits_amount, note)
        with _sessions()() as session:
            balance = credits.as_credits(accounts.tenant_by_name(session, tenant).credit_balance)
    except ValueError as e:  # an AccountError, or an amount out of range
        _fail(str(e))
    typer.echo(f"granted {credits_amount} credits to {tenant}; balance:")
    typer.echo(f"{balance:g}")


@credits_app.command("policy")
def credits_policy(
    tenant: Annotated[str, typer.Option(help="the tenant's name")],
    policy: Annotated[str, typer.Argument(help="flag: mark clusters running on a spent balance; stop: tear them down")],
) -> None:
    """Set what happens to a tenant's running clusters when its balance reaches zero."""
    if policy not in credits.BUDGET_POLICIES:
        _fail(f"the policy must be one of {', '.join(credits.BUDGET_POLICIES)}, not {policy!r}")
    try:
        with transaction(_sessions()) as session:
            accounts.tenant_by_name(session, tenant).budget_policy = policy
    except accounts.AccountError as e:
        _fail(str(e))
    typer.echo(f"budget policy of {tenant}: {policy}")


@credentials_app.command("new-key")
def credentials_new_key() -> None:
    """Print a new key for HPCINFRA_CREDENTIAL_KEYS (put it first to make it the current key)."""
    typer.echo(credentials.new_key())


@credentials_app.command("rotate")
def credentials_rotate() -> None:
    """Re-encrypt every stored secret (service credentials, webhook secrets, and the kept answers of
    Idempotency-Keys that showed a secret once) with the first key of HPCINFRA_CREDENTIAL_KEYS; afterwards the
    older keys can be dropped. Changes nothing unless every one can be read."""
    box = credentials.credential_box(get_settings())
    with transaction(_sessions()) as session:
        answers = session.scalars(
            select(IdempotencyKey).where(IdempotencyKey.body.startswith(credentials.SEALED_ANSWER))
        ).all()
        # Each kind of stored secret: its rows, the column that holds it, and what comes before the sealed text.
        stored = {
            "service credential(s)": (
                session.scalars(select(ClusterService).where(ClusterService.credentials_encrypted.is_not(None))).all(),
                "credentials_encrypted",
                "",
            ),
            "webhook secret(s)": (
                session.scalars(select(Webhook).where(Webhook.secret_encrypted.is_not(None))).all(),
                "secret_encrypted",
                "",
            ),
            # SQLite's LIKE ignores case: only the exact marker says an answer is sealed.
            "kept Idempotency-Key answer(s)": (
                [a for a in answers if a.body.startswith(credentials.SEALED_ANSWER)],
                "body",
                credentials.SEALED_ANSWER,
            ),
        }
        unreadable = dict.fromkeys(stored, 0)
        for kind, (rows, column, marker) in stored.items():
            for row in rows:
                try:
                    setattr(row, column, marker + box.reseal(getattr(row, column).removeprefix(marker)))
                except credentials.UndecryptableSecret:
                    unreadable[kind] += 1
        if any(unreadable.values()):  # _fail raises, so the transaction is rolled back
            which = ", ".join(f"{count} {kind}" for kind, count in unreadable.items() if count)
            total = sum(len(rows) for rows, _, _ in stored.values())
            _fail(
                f"{sum(unreadable.values())} of {total} stored secret(s) cannot be decrypted with "
                f"HPCINFRA_CREDENTIAL_KEYS ({which}); add the key they were encrypted with (after the new one) "
                "and run this again. Nothing was changed."
            )
    counts = [f"{len(rows)} {kind}" for kind, (rows, _, _) in stored.items()]
    typer.echo(f"re-encrypted {', '.join(counts[:-1])} and {counts[-1]} with the current key")


local_app = typer.Typer(help="The local provider: real Slurm clusters on this machine.", no_args_is_help=True)
app.add_typer(local_app, name="local")


@local_app.command("setup")
def local_setup() -> None:
    """Install Slurm and munge with apt and start munge (as root), so this machine can run local clusters."""
    from infra.providers.local import check_prerequisites, setup

    if os.geteuid() != 0:
        _fail("run `hpcinfra local setup` as root: it installs packages and starts munged")
    for done in setup():
        typer.echo(done)
    check_prerequisites()
    typer.echo("this machine can run local clusters")
