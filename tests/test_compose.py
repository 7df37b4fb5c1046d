"""The production stack (docker-compose.yml, Dockerfile, .env.example, deploy/): its wiring checked by
reading the files, and the scripts it runs checked by running them against real servers.

There is no Docker engine here, so the stack itself is never brought up: these tests catch the edits
that would break it (a renamed service, a wrong port, a mistyped setting, a secret with no value, a
search attribute the workflows use but the server does not know) before anyone runs it.
"""

import os
import re
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
import typer
import yaml
from packaging.requirements import Requirement
from sqlalchemy.engine import make_url

from api.main import API_PREFIX, create_app
from cli.main import app as cli_app
from core.search_attributes import ALL as SEARCH_ATTRIBUTES
from core.settings import Settings
from harness.servers import executable, free_port
from services.migrations import upgrade

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"

# The application's services, all from one image; each runs one `hpcinfra` command.
APP_COMMANDS = {"migrate": ["hpcinfra", "db", "upgrade"], "api": ["hpcinfra", "api"], "worker": ["hpcinfra", "worker"]}
# Compose's interpolation: ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?message}, ${NAME?message}.
REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def read_env_file(path: Path, *, commented: bool = False) -> dict[str, str]:
    """NAME=value lines; with `commented`, the `# NAME=value` lines that show optional settings instead."""
    pattern = re.compile(r"^#\s*([A-Z][A-Z0-9_]*)=(.*)$" if commented else r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$")
    found = {}
    for line in path.read_text().splitlines():
        if match := pattern.match(line.strip()):
            found[match.group(1)] = match.group(2)
    return found


def interpolate(value, env: dict[str, str]):
    """What `docker compose` makes of a value of the file given `env` (as from .env); a required
    variable that is unset or empty fails, as it stops `docker compose up`."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def resolve(match: re.Match) -> str:
        name, operator, argument = match.groups()
        current = env.get(name)
        missing = current is None or (operator is not None and operator.startswith(":") and current == "")
        if operator in (":?", "?") and missing:
            raise LookupError(f"{name} is required: {argument}")
        if operator in (":-", "-") and missing:
            return argument
        return current or ""

    return REFERENCE.sub(resolve, value.replace("$$", "\0")).replace("\0", "$")


def raw_compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def compose(env: dict[str, str] | None = None) -> dict:
    """The compose file as `docker compose` reads it with the operator's .env (here .env.example)."""
    return interpolate(raw_compose(), read_env_file(ENV_EXAMPLE) if env is None else env)


def services() -> dict[str, dict]:
    return compose()["services"]


def environment(service: dict) -> dict[str, str | None]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return {key: None if value is None else str(value) for key, value in env.items()}


def listening_ports(service: dict) -> set[int]:
    """The ports a service listens on inside the network: those it exposes and those it publishes."""
    ports = {int(str(port).split("/")[0]) for port in service.get("expose", [])}
    ports |= {published_port(spec)[1] for spec in service.get("ports", [])}
    return ports


def published_port(spec) -> tuple[int, int]:
    """(host port, container port) of a `ports` entry: "8000:8000" or "127.0.0.1:8080:8080"."""
    parts = str(spec).split("/")[0].split(":")
    assert len(parts) in (2, 3), f"publish host and container port explicitly, not {spec!r}"
    return int(parts[-2]), int(parts[-1])


def host_and_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    assert host and port.isdigit(), f"{address!r} is not host:port"
    return host, int(port)


def addresses(service: dict) -> Iterator[tuple[str, str, int]]:
    """(variable, host, port) for every address in a service's environment that names a host."""
    env = environment(service)
    for key, value in env.items():
        if not value:
            continue
        if key.endswith("DATABASE_URL"):
            url = make_url(value)
            yield key, url.host, url.port or 5432
        elif key.endswith("_ADDRESS"):
            yield key, *host_and_port(value)
        elif key == "POSTGRES_SEEDS":
            for seed in value.split(","):
                yield key, seed.strip(), int(env.get("DB_PORT") or 5432)


# --- The wiring between services ---------------------------------------------------------------


def test_every_dependency_is_a_service_and_waits_for_what_it_can():
    all_services = services()
    for name, service in all_services.items():
        depends_on = service.get("depends_on", {})
        assert isinstance(depends_on, dict), f"{name}: give each dependency a condition"
        for dependency, spec in depends_on.items():
            assert dependency in all_services, f"{name} depends on {dependency!r}, which is not a service"
            condition = spec.get("condition")
            target = all_services[dependency]
            if condition == "service_healthy":
                assert "healthcheck" in target, f"{name} waits for {dependency} to be healthy; it has no health check"
            elif condition == "service_completed_successfully":
                assert target.get("restart", "no") == "no", f"{dependency} is waited for to finish; it must not restart"
            else:
                pytest.fail(f"{name} -> {dependency}: condition {condition!r} waits for nothing useful")


def test_every_address_names_a_service_on_a_port_it_listens_on():
    all_services = services()
    checked = set()
    for name, service in all_services.items():
        for key, host, port in addresses(service):
            assert host in all_services, f"{name}: {key} names host {host!r}, which is not a service"
            assert port in listening_ports(all_services[host]), (
                f"{name}: {key} expects {host} on port {port}; it listens on {sorted(listening_ports(all_services[host]))}"
            )
            checked.add((name, key, host))
    # The addresses the stack cannot run without are among those checked (so this cannot pass vacuously).
    assert {
        ("migrate", "HPCINFRA_DATABASE_URL", "postgres"),
        ("api", "HPCINFRA_DATABASE_URL", "postgres"),
        ("worker", "HPCINFRA_DATABASE_URL", "postgres"),
        ("api", "HPCINFRA_TEMPORAL_ADDRESS", "temporal"),
        ("worker", "HPCINFRA_TEMPORAL_ADDRESS", "temporal"),
        ("temporal", "POSTGRES_SEEDS", "postgres"),
        ("temporal-schema", "POSTGRES_SEEDS", "postgres"),
        ("temporal-ui", "TEMPORAL_ADDRESS", "temporal"),
        ("search-attributes", "TEMPORAL_ADDRESS", "temporal"),
    } <= checked


def test_database_roles_and_passwords_are_those_the_init_script_makes():
    """The URL's user, database and password, and Temporal's, match what PostgreSQL is initialised with."""
    all_services = services()
    postgres = environment(all_services["postgres"])
    init_script = (ROOT / "deploy/postgres/init-databases.sh").read_text()
    for name in APP_COMMANDS:
        url = make_url(environment(all_services[name])["HPCINFRA_DATABASE_URL"])
        assert url.drivername == "postgresql+psycopg"
        assert url.password == postgres["HPCINFRA_DB_PASSWORD"]
        assert f"CREATE ROLE {url.username} LOGIN PASSWORD :'hpcinfra_password'" in init_script
        assert f"CREATE DATABASE {url.database} OWNER {url.username};" in init_script
    assert 'hpcinfra_password="$HPCINFRA_DB_PASSWORD"' in init_script
    assert 'temporal_password="$TEMPORAL_DB_PASSWORD"' in init_script

    temporal = environment(all_services["temporal"])
    schema = environment(all_services["temporal-schema"])
    assert temporal["POSTGRES_PWD"] == schema["SQL_PASSWORD"] == postgres["TEMPORAL_DB_PASSWORD"]
    assert temporal["POSTGRES_USER"] == schema["POSTGRES_USER"]
    assert f"CREATE ROLE {temporal['POSTGRES_USER']} LOGIN PASSWORD :'temporal_password'" in init_script
    for database in (temporal["DBNAME"], temporal["VISIBILITY_DBNAME"]):
        assert f"CREATE DATABASE {database} OWNER {temporal['POSTGRES_USER']};" in init_script
        assert database in (ROOT / "deploy/temporal/setup-schema.sh").read_text()
    # Each password is its own: the one given to hpcinfra opens nothing of Temporal's.
    secrets = [postgres[k] for k in ("POSTGRES_PASSWORD", "HPCINFRA_DB_PASSWORD", "TEMPORAL_DB_PASSWORD")]
    assert len(set(secrets)) == 3


def test_the_application_settings_are_real_and_valid_in_production(monkeypatch):
    """Every HPCINFRA_* variable given to the application is a field of Settings (a typo fails here),
    and together they make valid production settings."""
    fields = {f"HPCINFRA_{name.upper()}" for name in Settings.model_fields}
    all_services = services()
    for name in APP_COMMANDS:
        env = environment(all_services[name])
        unknown = sorted(key for key in env if key.startswith("HPCINFRA_") and key not in fields)
        assert not unknown, f"{name}: {unknown} are not settings (core/settings.py)"
        for key in list(os.environ):
            if key.startswith("HPCINFRA_"):
                monkeypatch.delenv(key)
        for key, value in env.items():
            if key.startswith("HPCINFRA_") and value is not None:
                monkeypatch.setenv(key, value)
        settings = Settings()
        assert settings.env == "production"
        assert settings.sqlalchemy_url.startswith("postgresql+psycopg://")
        assert settings.temporal_address == "temporal:7233"


def test_secrets_are_never_written_in_the_file_and_production_needs_them():
    """Passwords, keys and passphrases are references to required variables, never literals or defaults."""
    raw = raw_compose()
    secret_names = re.compile(r"PASSWORD|PASSPHRASE|SECRET_|_SECRET$|_KEYS$|_PWD$")
    seen = set()
    for name, service in raw["services"].items():
        for key, value in environment(service).items():
            if secret_names.search(key) and value is not None:
                assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]+\}", value), f"{name}: {key} must be ${{VAR:?message}}"
                seen.add(key)
    assert {"POSTGRES_PASSWORD", "HPCINFRA_CREDENTIAL_KEYS", "HPCINFRA_PULUMI_PASSPHRASE", "POSTGRES_PWD"} <= seen
    url = raw["x-hpcinfra-environment"]["HPCINFRA_DATABASE_URL"]
    assert "${HPCINFRA_DB_PASSWORD:?" in url


def test_a_missing_secret_stops_the_stack_with_a_message_naming_it():
    env = read_env_file(ENV_EXAMPLE)
    for name in ("HPCINFRA_CREDENTIAL_KEYS", "HPCINFRA_PULUMI_PASSPHRASE", "POSTGRES_PASSWORD"):
        with pytest.raises(LookupError, match=f"{name} is required: set {name} in .env"):
            compose({**env, name: ""})


def test_env_example_defines_every_required_variable_with_an_obvious_placeholder():
    text = COMPOSE_FILE.read_text()
    required = {name for name, operator, _ in REFERENCE.findall(text) if operator in (":?", "?")}
    referenced = {name for name, _, _ in REFERENCE.findall(text)}
    defined = read_env_file(ENV_EXAMPLE)
    assert required, "the compose file requires no secret at all"
    assert required <= set(defined), f"missing from .env.example: {sorted(required - set(defined))}"
    assert set(defined) <= required, (
        f".env.example sets variables the stack does not require: {set(defined) - required}"
    )
    for name in required:
        assert defined[name].startswith("REPLACE-ME"), f"{name} in .env.example must be an obvious placeholder"
    # The optional settings it shows are ones the stack reads (a misspelt one would be silently ignored).
    pass_through = {key for service in raw_compose()["services"].values() for key in environment(service)}
    optional = read_env_file(ENV_EXAMPLE, commented=True)
    assert optional
    for name in optional:
        assert name in referenced or name in pass_through, f".env.example shows {name}, which the stack does not read"


def test_volumes_are_declared_used_and_bind_mounts_exist():
    data = compose()
    declared = set(data.get("volumes") or {})
    used = set()
    for name, service in data["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                assert (ROOT / source).resolve().is_file(), f"{name} mounts {source}, which does not exist"
            else:
                assert source in declared, f"{name} uses volume {source!r}, which is not declared"
                used.add(source)
    assert declared == used, f"declared but unused: {declared - used}"
    assert "/var/lib/postgresql/data" in [v.split(":")[1] for v in data["services"]["postgres"]["volumes"]]


def test_the_worker_keeps_its_data_and_pulumi_state_on_a_volume():
    worker = services()["worker"]
    env = environment(worker)
    mounts = {v.split(":")[1]: v.split(":")[0] for v in worker["volumes"]}
    data_dir = env["HPCINFRA_DATA_DIR"]
    assert data_dir in mounts and mounts[data_dir] in compose()["volumes"]
    assert env["HPCINFRA_PULUMI_BACKEND_URL"].startswith(f"file://{data_dir}/")
    assert env["PULUMI_HOME"].startswith(f"{data_dir}/")


def test_published_ports_do_not_collide():
    seen: dict[int, str] = {}
    for name, service in services().items():
        for spec in service.get("ports", []):
            host_port, _ = published_port(spec)
            assert host_port not in seen, f"{name} and {seen[host_port]} both publish host port {host_port}"
            seen[host_port] = name
    assert {"api", "temporal-ui"} <= set(seen.values())


def health_check_url(service: dict) -> tuple[int, str]:
    """The port and path of the local URL a service's health check asks for."""
    check = " ".join(service["healthcheck"]["test"])
    match = re.search(r"http://(?:127\.0\.0\.1|localhost):(\d+)(/\S*?)'", check)
    assert match, f"the health check asks no local URL: {check}"
    return int(match.group(1)), match.group(2)


def test_the_api_listens_on_every_interface_and_its_health_check_asks_a_real_route():
    api = services()["api"]
    env = environment(api)
    assert env["HPCINFRA_API_HOST"] == "0.0.0.0"
    port = int(env["HPCINFRA_API_PORT"])
    assert port in {published_port(spec)[1] for spec in api["ports"]}
    asked_port, path = health_check_url(api)
    assert asked_port == port
    routes = set(create_app(Settings()).openapi()["paths"])
    assert path == f"{API_PREFIX}/healthz" and path in routes


def test_the_worker_serves_its_metrics_inside_the_network_and_its_health_check_asks_them():
    worker = services()["worker"]
    port = int(environment(worker)["HPCINFRA_WORKER_METRICS_PORT"])
    assert port in listening_ports(worker) and not worker.get("ports")  # for a scraper, not the world
    assert health_check_url(worker) == (port, "/metrics")


def test_the_application_services_run_real_commands_from_the_one_image():
    all_services = services()
    images = set()
    command_tree = typer.main.get_command(cli_app)
    for name, argv in APP_COMMANDS.items():
        service = all_services[name]
        assert service["command"] == argv
        build = service["build"]
        context = ROOT / build["context"]
        assert (context / build.get("dockerfile", "Dockerfile")).resolve() == DOCKERFILE
        images.add(service["image"])
        command = command_tree
        for word in argv[1:]:
            assert word in command.commands, f"{name} runs `{' '.join(argv)}`, which hpcinfra does not have"
            command = command.commands[word]
    assert len(images) == 1
    for name, service in all_services.items():
        if "build" in service:
            assert name in APP_COMMANDS, f"{name} is built from the Dockerfile but runs no known command"
        else:
            assert re.search(r":\d+(\.\d+)+$", service["image"]), f"{name}: pin {service['image']} to a version"


# --- Search attributes -------------------------------------------------------------------------


def search_attribute_names() -> list[str]:
    return environment(services()["search-attributes"])["KEYWORD_SEARCH_ATTRIBUTES"].split()


def test_the_one_shot_registers_exactly_hpcinfras_search_attributes():
    names = search_attribute_names()
    assert sorted(names) == sorted(key.name for key in SEARCH_ATTRIBUTES)
    assert len(names) == len(set(names))
    assert {key.indexed_value_type.name for key in SEARCH_ATTRIBUTES} == {"KEYWORD"}
    service = services()["search-attributes"]
    script = service["entrypoint"][-1]
    mounted = {v.split(":")[1]: v.split(":")[0] for v in service["volumes"]}
    assert "--type Keyword" in (ROOT / mounted[script]).read_text()
    assert environment(service)["NAMESPACE"] == environment(services()["api"])["HPCINFRA_TEMPORAL_NAMESPACE"]


def run_register_script(address: str, namespace: str, **overrides: str) -> subprocess.CompletedProcess:
    """The one-shot's script with the one-shot's environment, but against `address` and `namespace`."""
    env = {**environment(services()["search-attributes"]), "TEMPORAL_ADDRESS": address, "NAMESPACE": namespace}
    path = f"{Path(executable('temporal')).parent}:{os.environ['PATH']}"
    return subprocess.run(
        ["sh", str(ROOT / "deploy/temporal/register-search-attributes.sh")],
        env={**os.environ, **env, **overrides, "PATH": path},
        capture_output=True,
        text=True,
        timeout=180,
    )


def registered(address: str, namespace: str) -> dict[str, str]:
    listing = subprocess.run(
        [executable("temporal"), "operator", "search-attribute", "list", "--address", address, "-n", namespace],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return dict(line.split()[:2] for line in listing.splitlines()[1:] if line.strip())


def test_the_registration_script_makes_the_namespace_and_attributes_and_can_run_again(temporal_address):
    """Against a real Temporal server: a new namespace gets every attribute as Keyword; a second run
    (every `docker compose up` runs it) changes nothing and succeeds."""
    namespace = f"compose-{uuid.uuid4().hex[:8]}"
    first = run_register_script(temporal_address, namespace)
    assert first.returncode == 0, first.stdout + first.stderr
    attributes = registered(temporal_address, namespace)
    assert {name: attributes.get(name) for name in search_attribute_names()} == dict.fromkeys(
        search_attribute_names(), "Keyword"
    )

    again = run_register_script(temporal_address, namespace)
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.count("already exists") == len(search_attribute_names())
    assert registered(temporal_address, namespace) == attributes


def test_the_registration_script_refuses_an_attribute_of_another_type(temporal_address):
    namespace = f"compose-{uuid.uuid4().hex[:8]}"
    assert run_register_script(temporal_address, namespace).returncode == 0
    clash = "HpcinfraComposeClash"
    subprocess.run(
        [executable("temporal"), "operator", "search-attribute", "create", "--address", temporal_address,
         "-n", namespace, "--name", clash, "--type", "Int"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    result = run_register_script(temporal_address, namespace, KEYWORD_SEARCH_ATTRIBUTES=clash)
    assert result.returncode != 0
    assert f"{clash} exists with type Int, not Keyword" in result.stderr


# --- PostgreSQL's first start ------------------------------------------------------------------


@pytest.fixture
def private_postgres() -> Iterator[tuple[str, int]]:
    """A PostgreSQL server of our own, fresh as the postgres image's first start: (socket folder, port)."""
    initdb = shutil.which("initdb")
    if initdb is None:
        pytest.skip("initdb is not installed")
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    folder = Path(tempfile.mkdtemp(prefix="hpcinfra-compose-pg-"))
    if as_postgres:
        shutil.chown(folder, "postgres")
    data, port = folder / "data", free_port()
    subprocess.run(
        [*as_postgres, initdb, "-D", str(data), "-U", "postgres", "--auth-local=trust", "--auth-host=scram-sha-256"],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1"
    subprocess.run(
        [*as_postgres, shutil.which("pg_ctl") or "pg_ctl", "-D", str(data), "-o", options, "-l", str(folder / "log"),
         "-w", "start"],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    try:
        yield str(folder), port
    finally:
        subprocess.run(
            [*as_postgres, shutil.which("pg_ctl") or "pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop"],
            capture_output=True, timeout=120,
        )  # fmt: skip
        shutil.rmtree(folder, ignore_errors=True)


def test_the_init_script_makes_separate_databases_that_hpcinfra_can_migrate(private_postgres):
    socket_folder, port = private_postgres
    env = read_env_file(ENV_EXAMPLE)
    # A quote in a password must not break the SQL (psql quotes the variable).
    env["TEMPORAL_DB_PASSWORD"] = "not-a-real-password-with-a-quote-'-in-it"
    postgres_env = environment(compose(env)["services"]["postgres"])
    result = subprocess.run(
        ["sh", str(ROOT / "deploy/postgres/init-databases.sh")],
        env={**os.environ, **postgres_env, "PGHOST": socket_folder, "PGPORT": str(port)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr

    # hpcinfra's own URL, pointed at this server, migrates and uses its database.
    url = make_url(environment(compose(env)["services"]["migrate"])["HPCINFRA_DATABASE_URL"])
    url = url.set(host="127.0.0.1", port=port)
    upgrade(url.render_as_string(hide_password=False))
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            assert connection.exec_driver_sql("SELECT count(*) FROM tenants").scalar() == 0
    finally:
        engine.dispose()

    temporal = environment(compose(env)["services"]["temporal"])

    def connect(user: str, password: str, database: str) -> psycopg.Connection:
        return psycopg.connect(host="127.0.0.1", port=port, user=user, password=password, dbname=database)

    with connect(temporal["POSTGRES_USER"], temporal["POSTGRES_PWD"], temporal["VISIBILITY_DBNAME"]) as connection:
        assert connection.execute("SELECT 1 FROM pg_extension WHERE extname = 'btree_gin'").fetchone()
    with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
        connect(url.username, url.password, temporal["DBNAME"])
    with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
        connect(temporal["POSTGRES_USER"], temporal["POSTGRES_PWD"], url.database)


# --- The image -----------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments left out."""
    lines = [line for line in DOCKERFILE.read_text().splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in joined.splitlines() if line.strip()]


def test_the_image_installs_the_pinned_pulumi_cli_and_the_project_and_runs_unprivileged():
    instructions = dockerfile_instructions()
    text = DOCKERFILE.read_text()
    stages = [i for i, (op, _) in enumerate(instructions) if op == "FROM"]
    final = instructions[stages[-1] :]
    assert re.match(r"python:3\.11-slim\b", final[0][1])

    version = re.search(r"^ARG PULUMI_VERSION=(\S+)$", text, re.M).group(1)
    assert re.fullmatch(r"\d+\.\d+\.\d+", version), "pin the Pulumi CLI to one release"
    pyproject = (ROOT / "pyproject.toml").read_text()
    sdk = next(Requirement(r) for r in re.findall(r'"(pulumi[^"]*)"', pyproject) if Requirement(r).name == "pulumi")
    assert sdk.specifier.contains(version), f"Pulumi {version} is outside the project's {sdk}"
    runs = " ".join(args for op, args in instructions if op == "RUN")
    assert "https://get.pulumi.com/releases/sdk/${tarball}" in runs
    assert 'tarball="pulumi-v${PULUMI_VERSION}-linux-${arch}.tar.gz"' in runs
    assert "sha256sum -c" in runs
    assert "PATH=/opt/pulumi/bin:" in text and "COPY --from=pulumi /opt/pulumi /opt/pulumi" in text

    final_runs = " ".join(args for op, args in final if op == "RUN")
    assert re.search(r"pip install /src \"pulumi==\$\{PULUMI_VERSION\}\"", final_runs)
    assert "source=.,target=/src" in final_runs

    users = [args.strip() for op, args in final if op == "USER"]
    assert users and users[-1] not in ("root", "0", "0:0"), "the image must not run as root"
    assert [op for op, _ in final].index("USER") > max(i for i, (op, _) in enumerate(final) if op == "RUN")
    assert not re.search(r"(PASSWORD|PASSPHRASE|CREDENTIAL_KEYS|SECRET)\w*=", text), "no secret in the image"


def test_the_build_context_leaves_out_local_state_and_secrets():
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", "data", ".env", "*.egg-info"} <= ignored
    assert "README.md" not in ignored and "pyproject.toml" not in ignored  # `pip install` needs them
