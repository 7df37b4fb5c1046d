"""The user commands (`hpcinfra requests|clusters|analytics`), run against the real stack over HTTP, as
a CAD manager and an IT manager run them: the walkthrough, and every kind of error as one line."""

import json
import re
import socket
import subprocess
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from cli.user.analytics import credit_series
from cli.user.charts import bar, sparkline
from harness.servers import executable, free_port, wait_until
from harness.world import Person, TenantWorld, file_request, make_tenant, wait_for_cluster


@pytest.fixture
def run(stack, tmp_path):
    """`run(who, *args)`: the CLI in this process, with the server and `who`'s token in the environment
    and an empty config file (so a config of the machine it runs on plays no part)."""
    no_config = tmp_path / "empty.toml"
    no_config.write_text("")

    def invoke(who: Person | None, *args: str, input: str | None = None, **env: str | None):
        environment = {
            "HPCINFRA_URL": stack.base_url,
            "HPCINFRA_TOKEN": who.token if who else None,
            "HPCINFRA_CONFIG": str(no_config),
            "HPCINFRA_HTTP_TIMEOUT": None,
            "COLUMNS": "200",
            **env,
        }
        result = CliRunner().invoke(app, list(args), env=environment, input=input)
        # Whatever happens, a person sees a message, never a traceback.
        assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
        assert "Traceback" not in result.output
        if who is not None:
            assert who.token not in result.output
        return result

    return invoke


def ok(result) -> str:
    assert result.exit_code == 0, result.output
    return result.stdout


def error_line(result, code: int = 1) -> str:
    """The one line a failed command prints on stderr."""
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_the_walkthrough_with_the_cli_alone(run, api, tenant: TenantWorld):
    cad, it = tenant.cad, tenant.it
    name = f"rtl-{uuid.uuid4().hex[:6]}"

    # The CAD manager files a request, naming the provider by its name, with a tool and a service.
    filed = json.loads(ok(run(cad, "requests", "file", name, "--provider", "sim", "--nodes", "2",
                              "--node-type", "small", "--tool", "iverilog@12.0", "--service", "postgresql@16",
                              "--output", "json")))  # fmt: skip
    request_id = filed["id"]
    assert (filed["status"], filed["cloudProviderId"], filed["size"]["numberOfNodes"]) == (
        "pending", tenant.provider_id, 2,
    )  # fmt: skip
    assert [(t["name"], t["version"]) for t in filed["tools"]] == [("iverilog", "12.0")]
    assert [(s["name"], s["version"]) for s in filed["services"]] == [("postgresql", "16")]

    # Lists and details: tables for people, the API's JSON for --output json.
    listed = ok(run(it, "requests", "list", "--status", "pending"))
    assert request_id in listed and name in listed and "pending" in listed and cad.email in listed
    assert json.loads(ok(run(it, "requests", "list", "-o", "json"))) == api.get("/requests", headers=it.headers).json()
    assert ok(run(it, "requests", "list", "--status", "rejected")).strip() == "no requests"
    shown = ok(run(cad, "requests", "show", request_id))
    assert "iverilog@12.0" in shown and "postgresql@16" in shown and "2 x small" in shown
    assert (
        json.loads(ok(run(cad, "requests", "show", request_id, "-o", "json")))
        == api.get(f"/requests/{request_id}", headers=cad.headers).json()
    )

    # The IT manager adds a note (shown as written, brackets and all) and approves with a reason (a note
    # too, added once approved).
    assert "note added by it@" in ok(run(it, "requests", "note", request_id, "[ok] for this sprint"))
    approved = ok(run(it, "requests", "approve", request_id, "--reason", "fits the budget"))
    assert "approved" in approved and "[ok] for this sprint" in approved and "fits the budget" in approved
    request = api.get(f"/requests/{request_id}", headers=cad.headers).json()
    assert request["status"] == "approved" and [n["note"] for n in request["notes"]] == [
        "[ok] for this sprint", "fits the budget",
    ]  # fmt: skip
    cluster_id = request["clusterId"]

    # Watching ends, exit code 0, once the cluster is available with its tool installed and service running.
    watched = run(cad, "clusters", "watch", cluster_id, "--timeout", "120", "--interval", "0.2")
    assert watched.exit_code == 0, watched.output
    for step in ("provision", "head-node", "health-check", "install-tool: iverilog 12.0 installed", "postgresql"):
        assert step in watched.stdout, watched.stdout
    assert "the cluster is available, with its tools and services ready" in watched.stdout
    cluster = api.get(f"/clusters/{cluster_id}", headers=cad.headers).json()
    assert cluster["status"] == "available" and cluster["tools"][0]["status"] == "installed"
    password = cluster["services"][0]["credentials"]["password"]

    shown = ok(run(cad, "clusters", "show", cluster_id))
    for text in ("available", "2 x small, 10 GB", cluster["outputs"]["headNode"], "iverilog", "installed",
                 "postgresql", "running", "step log", "compute-nodes"):  # fmt: skip
        assert text in shown, text
    assert password not in shown  # credentials only when asked for
    assert json.loads(ok(run(cad, "clusters", "show", cluster_id, "-o", "json"))) == cluster
    assert cluster_id in ok(run(it, "clusters", "list")) and name in ok(run(cad, "clusters", "list"))
    assert [c["id"] for c in json.loads(ok(run(cad, "clusters", "list", "-o", "json")))] == [cluster_id]

    credentials = ok(run(cad, "clusters", "credentials", cluster_id))
    assert password in credentials and "username" in credentials and "5432" in credentials
    # Another CAD manager does not see the cluster at all.
    assert "404 Not Found" in error_line(run(tenant.cad2, "clusters", "credentials", cluster_id))

    # A tool more; watching again waits for its install.
    added = ok(run(cad, "clusters", "add-tool", cluster_id, "yosys@0.40"))
    # The answer shows the item as it is by then: the sim may have installed it already.
    assert re.search(r"yosys 0\.40: (pending|installing|installed) ", added)
    assert re.search(
        r"redis 7\.2: (pending|provisioning|running) ", ok(run(cad, "clusters", "add-service", cluster_id, "redis@7.2"))
    )
    assert run(cad, "clusters", "watch", cluster_id, "--timeout", "120", "--interval", "0.2").exit_code == 0
    tools = {t["name"]: t["status"] for t in api.get(f"/clusters/{cluster_id}/tools", headers=cad.headers).json()}
    assert tools == {"iverilog": "installed", "yosys": "installed"}
    services = api.get(f"/clusters/{cluster_id}/services", headers=cad.headers).json()
    assert {s["name"]: s["status"] for s in services} == {"postgresql": "running", "redis": "running"}
    assert "redis 7.2 (running)" in ok(run(it, "clusters", "credentials", cluster_id))
    assert "install-tool" in ok(run(cad, "clusters", "events", cluster_id))

    # Metrics, once the first minute is metered.
    def metered():
        points = api.get(f"/clusters/{cluster_id}/metrics", params={"interval": "minute"}, headers=cad.headers)
        return points.json()["metrics"]

    first = wait_until(metered, timeout=150, every=2, what="the first metered minute")[0]
    metrics = ok(run(cad, "clusters", "metrics", cluster_id, "--interval", "minute", "--start", "1h"))
    assert "CPU %" in metrics and "RATE/H" in metrics and f"{first['credits']['rate']:.3f}" in metrics
    start = datetime.fromisoformat(first["timestamp"])
    start, end = start.isoformat(), (start + timedelta(minutes=1)).isoformat()
    as_json = json.loads(ok(run(it, "clusters", "metrics", cluster_id, "--interval", "minute", "--start", start,
                                "--end", end, "-o", "json")))  # fmt: skip
    assert as_json["timeRange"]["interval"] == "minute" and as_json["metrics"][0] == first

    # Analytics for the IT manager: balance, forecast, who spends what, and the chart.
    report = ok(run(it, "analytics"))
    for text in ("balance", "forecast", "next month", "spend by cluster", name, "spend by user", "cad", "▁"):
        assert text in report, text
    analytics = json.loads(ok(run(it, "analytics", "--tenant", tenant.id, "--start", "2h", "-o", "json")))
    assert [c["clusterId"] for c in analytics["breakdown"]["byCluster"]] == [cluster_id]
    assert analytics["credits"]["balance"] < 10_000

    # Deleting asks first; "no" changes nothing.
    refused = run(cad, "clusters", "delete", cluster_id, input="n\n")
    assert refused.exit_code == 1 and "Delete cluster" in refused.output
    assert api.get(f"/clusters/{cluster_id}", headers=cad.headers).json()["status"] == "available"
    assert "is deleting" in ok(run(cad, "clusters", "delete", cluster_id, "--yes"))
    wait_for_cluster(api, cluster_id, cad.headers, "deleted")
    assert error_line(run(cad, "clusters", "watch", cluster_id)) == "error: the cluster is deleted"


def test_an_elastic_cluster_s_scaling_nodes_and_lease_in_the_cli(run, api, tenant: TenantWorld):
    """Filed with a floor of 1 of 2 nodes; no job asks for the second, so it stays down. It has no lease
    until its creator gives it one."""
    cad, it = tenant.cad, tenant.it
    filed = json.loads(ok(run(cad, "requests", "file", f"el-{uuid.uuid4().hex[:6]}", "--provider", "sim",
                              "--nodes", "2", "--node-type", "small", "--min-nodes", "1", "--idle-seconds", "90",
                              "-o", "json")))  # fmt: skip
    assert filed["scaling"] == {"minNodes": 1, "idleSeconds": 90}
    ok(run(it, "requests", "approve", filed["id"]))
    cluster_id = api.get(f"/requests/{filed['id']}", headers=cad.headers).json()["clusterId"]
    wait_for_cluster(api, cluster_id, cad.headers, "available")
    shown = ok(run(cad, "clusters", "show", cluster_id))
    assert "2 x small, 10 GB; 1 up now" in shown and "elastic: 1 always up" in shown
    assert re.search(r"node-0\W+up\b", shown) and re.search(r"node-1\W+down\b", shown), shown
    assert "never: it runs until deleted" in shown
    extended = ok(run(cad, "clusters", "extend", cluster_id, "--until", "3h"))
    assert "its lease ends at" in extended
    ends = datetime.fromisoformat(api.get(f"/clusters/{cluster_id}", headers=cad.headers).json()["expiresAt"])
    assert timedelta(hours=2, minutes=59) < ends - datetime.now(UTC) <= timedelta(hours=3)
    assert "'soon' is neither a time" in run(cad, "clusters", "extend", cluster_id, "--until", "soon").output

    # Resized: beyond the self-service limit it takes a request; within it, static and smaller, followed by watch.
    assert "naming resizesClusterId" in error_line(run(cad, "clusters", "resize", cluster_id, "--nodes", "3"))
    assert "together" in error_line(run(cad, "clusters", "resize", cluster_id, "--nodes", "1", "--min-nodes", "0"))
    assert "resizing to 1 node(s)" in ok(run(cad, "clusters", "resize", cluster_id, "--nodes", "1", "--static"))
    watched = ok(run(cad, "clusters", "watch", cluster_id, "--nodes", "--timeout", "3", "--interval", "0.5"))
    assert "resize: to 1 node(s), always up, asked by" in watched, watched
    wait_until(lambda: api.get(f"/clusters/{cluster_id}", headers=cad.headers).json()["size"]["numberOfNodes"] == 1)
    assert re.search(r"node-0\W+up\b", ok(run(cad, "clusters", "show", cluster_id)))


def test_api_errors_are_one_line_with_the_problem_and_change_nothing(run, api, tenant: TenantWorld):
    cad, it = tenant.cad, tenant.it
    missing = str(uuid.uuid4())
    assert error_line(run(it, "requests", "show", missing)) == (
        f"error: 404 Not Found: there is no request {missing} that you can see"
    )
    assert "404 Not Found: there is no cluster" in error_line(run(cad, "clusters", "show", missing))

    # A CAD manager may not decide requests: 403, and the request stays pending.
    request = file_request(api, cad, tenant.provider_id)
    line = error_line(run(cad, "requests", "approve", request["id"], "--reason", "mine"))
    assert (
        line
        == "error: 403 Forbidden: only it_manager or admin users may approve or reject requests; you are cad_manager"
    )
    after = api.get(f"/requests/{request['id']}", headers=cad.headers).json()
    assert after["status"] == "pending" and after["notes"] == []
    # Deciding twice: 409.
    ok(run(it, "requests", "reject", request["id"], "--reason", "use the shared cluster"))
    assert "409 Conflict: the request is already rejected" in error_line(run(it, "requests", "approve", request["id"]))
    assert "403 Forbidden" in error_line(run(cad, "analytics"))
    bad_time = run(it, "analytics", "--start", "yesterday")
    assert bad_time.exit_code == 2 and "'yesterday' is neither a time" in bad_time.stderr
    assert "must be before end" in error_line(run(it, "analytics", "--start", "1h", "--end", "2h"))

    # A bad node count: the 422's field, and nothing filed.
    line = error_line(run(cad, "requests", "file", "too-big", "--provider", tenant.provider_id, "--nodes", "0",
                          "--node-type", "small"))  # fmt: skip
    assert (
        line.startswith("error: 422 Unprocessable Entity: size.numberOfNodes: ")
        and "greater than or equal to 1" in line
    )
    assert "catalog" in error_line(run(cad, "requests", "file", "x", "--provider", "sim", "--nodes", "1",
                                       "--node-type", "small", "--tool", "iverilog@99"))  # fmt: skip
    assert "no cloud provider named 'nowhere'" in error_line(
        run(cad, "requests", "file", "x", "--provider", "nowhere", "--nodes", "1", "--node-type", "small")
    )
    assert [r["id"] for r in api.get("/requests", headers=cad.headers).json()] == [request["id"]]

    # A malformed tool spec is refused before anything is sent.
    for spec in ("iverilog", "iverilog@", "@12.0", "a@b@c"):
        bad = run(cad, "requests", "file", "x", "--provider", "sim", "--nodes", "1", "--node-type", "small",
                  "--tool", spec)  # fmt: skip
        assert bad.exit_code == 2 and f"'{spec}' is not NAME@VERSION, e.g. iverilog@12.0" in bad.stderr, bad.stderr
    assert "is not NAME@VERSION" in run(cad, "clusters", "add-service", missing, "postgresql").stderr
    assert len(api.get("/requests", headers=cad.headers).json()) == 1

    # A wrong token: 401, with what to check; the token itself is never shown.
    wrong = Person(cad.id, cad.email, cad.role, "hpci_not-a-real-token-000")
    line = error_line(run(wrong, "clusters", "list"))
    assert line.startswith("error: 401 Unauthorized") and "check HPCINFRA_TOKEN" in line


def test_an_approval_whose_reason_cannot_be_noted_says_it_is_approved(run, api, tenant: TenantWorld):
    """The reason is a note added after the approval: when the note is refused, the approval stands
    and the error says so, with the command that adds the note."""
    request = file_request(api, tenant.cad, tenant.provider_id)
    line = error_line(run(tenant.it, "requests", "approve", request["id"], "--reason", "x" * 10_001))
    assert line.startswith(
        f"error: request {request['id']} is approved, but its reason was not added as a note (422 Unprocessable Entity: "
    ) and line.endswith(f"add it with `hpcinfra requests note {request['id']} TEXT`")
    after = api.get(f"/requests/{request['id']}", headers=tenant.it.headers).json()
    assert after["status"] == "approved" and after["notes"] == []


def test_failed_provisioning_a_failed_install_and_a_timeout_end_the_watch_with_non_zero_codes(run, api, stack):
    tenant = make_tenant(
        stack.db.sessions,
        extra_providers={
            "broken": {"kind": "sim", "config": {"failAt": "head-node"}},
            "no-yosys": {"kind": "sim", "config": {"failTools": ["yosys"]}},
            "slow": {"kind": "sim", "config": {"stepSeconds": 3}},
        },
    )

    def approved_cluster(provider: str, *tools: str) -> str:
        args = [a for t in tools for a in ("--tool", t)]
        filed = json.loads(ok(run(tenant.cad, "requests", "file", f"c-{uuid.uuid4().hex[:6]}", "--provider", provider,
                                  "--nodes", "1", "--node-type", "small", *args, "-o", "json")))  # fmt: skip
        return json.loads(ok(run(tenant.it, "requests", "approve", filed["id"], "-o", "json")))["clusterId"]

    broken = approved_cluster("broken")
    result = run(tenant.cad, "clusters", "watch", broken, "--timeout", "120", "--interval", "0.2")
    line = error_line(result)
    assert line.startswith("error: the cluster is in error: ") and "head-node" in line
    assert "✗ head-node" in result.stdout

    no_yosys = approved_cluster("no-yosys", "iverilog@12.0", "yosys@0.40")
    line = error_line(run(tenant.cad, "clusters", "watch", no_yosys, "--timeout", "120", "--interval", "0.2"))
    assert line.startswith("error: the cluster is available, but tool yosys 0.40 failed: ")
    assert "iverilog" not in line

    slow = approved_cluster("slow")
    line = error_line(run(tenant.cad, "clusters", "watch", slow, "--timeout", "1", "--interval", "0.2"), code=124)
    assert line.startswith("error: gave up after 1 seconds; the cluster is ")


def test_where_the_server_and_token_come_from(run, stack, tenant: TenantWorld, tmp_path: Path):
    cad = tenant.cad
    config = tmp_path / "config.toml"
    config.write_text(f'url = "{stack.base_url}"\ntoken = "{cad.token}"\n')

    # From the config file alone (the server's address without /api/v1 works too).
    assert ok(run(None, "clusters", "list", HPCINFRA_URL=None, HPCINFRA_CONFIG=str(config))).strip() == "no clusters"
    config.write_text(f'url = "{stack.base_url.removesuffix("/api/v1")}/"\ntoken = "{cad.token}"\n')
    assert ok(run(None, "requests", "list", HPCINFRA_URL=None, HPCINFRA_CONFIG=str(config))).strip() == "no requests"
    # The environment wins over the file.
    unreachable = f"http://127.0.0.1:{free_port()}"
    assert "cannot connect" in error_line(
        run(None, "clusters", "list", HPCINFRA_URL=unreachable, HPCINFRA_CONFIG=str(config))
    )
    line = error_line(run(None, "clusters", "list", HPCINFRA_URL=None, HPCINFRA_TOKEN="hpci_fake-000",
                          HPCINFRA_CONFIG=str(config)))  # fmt: skip
    assert line.startswith("error: 401 Unauthorized")
    # The default file is ~/.config/hpcinfra/config.toml.
    home = tmp_path / "home"
    (home / ".config" / "hpcinfra").mkdir(parents=True)
    (home / ".config" / "hpcinfra" / "config.toml").write_text(config.read_text())
    assert (
        ok(run(None, "clusters", "list", HPCINFRA_URL=None, HPCINFRA_CONFIG=None, HOME=str(home))).strip()
        == "no clusters"
    )

    # What is missing or wrong, in one line that says how to set it.
    line = error_line(run(None, "clusters", "list", HPCINFRA_CONFIG=None, HOME=str(tmp_path / "nobody")))
    assert line == (
        "error: no API token: set HPCINFRA_URL and HPCINFRA_TOKEN (the `make dev` banner shows both), or put "
        f"`url` and `token` in {tmp_path / 'nobody' / '.config' / 'hpcinfra' / 'config.toml'}"
    )
    assert error_line(run(cad, "clusters", "list", HPCINFRA_URL=None)).startswith(
        "error: no server to talk to: set HPCINFRA_URL"
    )
    config.write_text('url = "http://127.0.0.1:8000\n')
    assert error_line(run(cad, "clusters", "list", HPCINFRA_CONFIG=str(config))).startswith(
        f"error: the config file {config} is not valid TOML: "
    )
    assert error_line(run(cad, "clusters", "list", HPCINFRA_CONFIG=str(tmp_path / "typo.toml"))) == (
        f"error: HPCINFRA_CONFIG names {tmp_path / 'typo.toml'}, which does not exist"
    )
    assert "must start with http:// or https://" in error_line(
        run(cad, "clusters", "list", HPCINFRA_URL="localhost:8000")
    )


def test_an_unreachable_or_silent_server_is_a_clear_error_not_a_traceback(run, tenant: TenantWorld):
    # The installed command, as a person runs it, against a port nobody listens on.
    port = free_port()
    result = subprocess.run(
        [executable("hpcinfra"), "clusters", "list"],
        env={"HPCINFRA_URL": f"http://127.0.0.1:{port}/api/v1", "HPCINFRA_TOKEN": tenant.cad.token,
             "HPCINFRA_CONFIG": "/dev/null"},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == (
        f"error: cannot connect to the hpcinfra API at http://127.0.0.1:{port}/api/v1: is it running, and is "
        "HPCINFRA_URL right?\n"
    )

    # A server that accepts the connection and never answers.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        line = error_line(run(tenant.cad, "requests", "list", HPCINFRA_URL=url, HPCINFRA_HTTP_TIMEOUT="0.5"))
    assert line == f"error: the hpcinfra API at {url}/api/v1 did not answer within 0.5 seconds"


def test_the_credit_chart_walks_the_balance_back_through_the_ledger():
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    history = {
        "balance": 97.0,  # now: 100 granted, 1 and 2 consumed
        "entries": [  # newest first, as the API lists them
            {"kind": "consumption", "amount": -2.0, "periodEnd": (t0 + timedelta(minutes=150)).isoformat(),
             "time": (t0 + timedelta(minutes=151)).isoformat()},
            {"kind": "consumption", "amount": -1.0, "periodEnd": (t0 + timedelta(hours=1)).isoformat(),
             "time": (t0 + timedelta(minutes=61)).isoformat()},
            {"kind": "grant", "amount": 100.0, "periodEnd": None, "time": t0.isoformat()},
        ],
        "complete_from": None,
    }  # fmt: skip
    balances, spent = credit_series(history, t0, t0 + timedelta(hours=3), timedelta(hours=1))
    assert balances == [99.0, 99.0, 97.0] and spent == [1.0, 0.0, 2.0]
    # From before the grant: the balance was 0.
    balances, _ = credit_series(history, t0 - timedelta(hours=2), t0 + timedelta(hours=1), timedelta(hours=1))
    assert balances == [0.0, 100.0, 99.0]
    assert (
        sparkline([0, 4, 8]) == "▁▅█"
        and sparkline([5, 5]) == "██"
        and sparkline([0, 0]) == "▁▁"
        and sparkline([]) == ""
    )
    assert bar(1, 2, width=4) == "██" and bar(0, 2) == ""
