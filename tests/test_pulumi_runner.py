"""The Automation API runner and the cloud providers around it.

Without the Pulumi CLI (as on the machines this project is developed on: no package registry it
installs from ships it), provisioning on a cloud fails at once with a message that says what to
install; that path, and how failures are classified, are tested everywhere. The runner's own work
with the CLI (a real stack on a local file backend, a lock left by a dead run) is tested where the
CLI is installed, and skipped with that reason where it is not.
"""

import asyncio
import base64
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path

import pulumi
import pulumi.automation as auto
import pytest

from core.catalog import NODE_TYPES
from core.providers import ClusterSpec, FailureClass, ProviderFailure
from infra.clouds.exposure import cloud_pulumi_command, redacted
from infra.clouds.runner import StackRunner, StackSettings, _classified, stack_name
from infra.providers import ProviderSettings, get_provider

needs_cli = pytest.mark.skipif(
    shutil.which("pulumi") is None,
    reason="the Pulumi CLI is not installed on this machine (no package registry this project uses ships it)",
)


def settings(tmp_path, passphrase: str = "test passphrase") -> StackSettings:
    return StackSettings(f"file://{tmp_path / 'state'}", "passphrase", passphrase, tmp_path / "work")


def cluster() -> ClusterSpec:
    return ClusterSpec(
        cluster_id=str(uuid.uuid4()),
        tenant="acme",
        name="rtl",
        region="eu-west-1",
        number_of_nodes=2,
        node_type=NODE_TYPES["small"],
        storage_gb=10,
        provider_config={"sshCidr": "198.51.100.0/24"},
    )


@pytest.mark.parametrize("kind", ["aws", "gcp", "azure"])
def test_without_the_cli_provisioning_fails_at_once_saying_what_to_install(kind, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setenv("HOME", str(tmp_path))
    provider = get_provider(kind, ProviderSettings(tmp_path, 0, f"file://{tmp_path}", "passphrase", "p"))
    started = time.monotonic()
    with pytest.raises(ProviderFailure) as failure:
        asyncio.run(provider.up(cluster(), lambda line: None))
    assert failure.value.failure_class is FailureClass.CONFIGURATION  # not retried
    assert "the Pulumi CLI is not installed on the worker" in failure.value.message
    assert time.monotonic() - started < 30


def test_a_cloud_provider_without_an_admin_range_fails_as_bad_configuration(tmp_path):
    provider = get_provider("aws", ProviderSettings(tmp_path, 0, f"file://{tmp_path}", "passphrase", "p"))
    with pytest.raises(ProviderFailure, match="sshCidr") as failure:
        asyncio.run(provider.up(replace(cluster(), provider_config={}), lambda line: None))
    assert failure.value.failure_class is FailureClass.CONFIGURATION


@pytest.mark.parametrize(
    "output, failure_class",
    [
        (
            "error: creating EC2 Instance: InsufficientInstanceCapacity: We currently do not have capacity",
            "capacity or quota",
        ),
        ("googleapi: Error 403: Quota 'CPUS' exceeded. Limit: 24.0 in region", "capacity or quota"),
        ("error: RequestLimitExceeded: Request limit exceeded", "provider outage"),
        ('Code="InternalServerError" Message="An unexpected error occured"', "provider outage"),
        ("error: timeout while waiting for state to become 'running'", "timeout"),
        ("error: InvalidParameterValue: Value (m6i.huge) for parameter instanceType is invalid", "bad configuration"),
    ],
)
def test_failures_are_classified_from_what_pulumi_says(output, failure_class):
    failure = _classified(failed(stderr=output), "acme-1")
    assert str(failure.failure_class) == failure_class
    assert failure.failure_class.retryable == (failure_class in ("provider outage", "timeout"))


def failed(stdout: str = "", stderr: str = "", code: int = 255) -> auto.CommandError:
    return auto.CommandError(auto.CommandResult(stdout=stdout, stderr=stderr, code=code))


# What AWS says when the worker's identity may not do something: the message names the identity
# (its role and account) and carries an encoded policy report only the account's owner should decode.
AWS_ENCODED = base64.urlsafe_b64encode(bytes(range(7, 256, 3)) * 4).decode()
AWS_REFUSED = (
    "creating EC2 Instance: operation error EC2: RunInstances, https response error StatusCode: 403, "
    "RequestID: 1f3a9c52-7b1e-4f0a-9d6c-2a8e5b7c4d10, api error UnauthorizedOperation: You are not authorized to "
    "perform this operation. User: arn:aws:sts::123456789012:assumed-role/hpcinfra-worker/i-0a1b2c3d4e5f67890 is "
    "not authorized to perform: ec2:RunInstances on resource: arn:aws:ec2:eu-west-1:123456789012:instance/* because "
    f"no identity-based policy allows the ec2:RunInstances action. Encoded authorization failure message: {AWS_ENCODED}"
)
AWS_UP = f"""Updating (acme-5e0c3c0e):

 +  pulumi:pulumi:Stack hpcinfra-acme-5e0c3c0e creating (0s)
 +  aws:ec2:Instance head creating (0s)
 +  aws:ec2:Instance head creating (1s) error: sdk-v2/provider2.go:520: sdk.helper_schema: {AWS_REFUSED}: provider=aws@7.3.0
 +  aws:ec2:Instance head **creating failed** error: sdk-v2/provider2.go:520: sdk.helper_schema: {AWS_REFUSED}: provider=aws@7.3.0
 +  pulumi:pulumi:Stack hpcinfra-acme-5e0c3c0e creating (2s) error: update failed
 +  pulumi:pulumi:Stack hpcinfra-acme-5e0c3c0e **creating failed** 1 error
Diagnostics:
  aws:ec2:Instance (head):
    error: sdk-v2/provider2.go:520: sdk.helper_schema: {AWS_REFUSED}: provider=aws@7.3.0

  pulumi:pulumi:Stack (hpcinfra-acme-5e0c3c0e):
    error: update failed

Resources:
    + 6 created
    1 unchanged

Duration: 9s
"""

GCP_UP = """Updating (acme-5e0c3c0e):

 +  gcp:compute:Instance head creating (0s) error: 1 error occurred:
 +  gcp:compute:Instance head **creating failed** error: 1 error occurred:
 +  pulumi:pulumi:Stack hpcinfra-acme-5e0c3c0e creating (3s) error: update failed
Diagnostics:
  gcp:compute:Instance (head):
    error: 1 error occurred:
    \t* creating Instance: googleapi: Error 403: QUOTA_EXCEEDED: Quota 'N2_CPUS' exceeded.  Limit: 24.0 in region europe-west1.
    Details:
    [
      {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "domain": "googleapis.com",
        "metadata": {
          "consumer": "projects/418267305522",
          "quota_metric": "compute.googleapis.com/n2_cpus"
        },
        "reason": "QUOTA_EXCEEDED"
      },
      {
        "@type": "type.googleapis.com/google.rpc.Help",
        "links": [{"url": "https://cloud.google.com/compute/quotas#requesting_additional_quota"}]
      }
    ]
    , quotaExceeded

  pulumi:pulumi:Stack (hpcinfra-acme-5e0c3c0e):
    error: update failed
"""

AZURE_UP = """Diagnostics:
  azure-native:compute:VirtualMachine (head):
    error: Status=403 Code="AuthorizationFailed" Message="The client 'c0ffee00-1111-2222-3333-444455556666' with \
object id 'c0ffee00-1111-2222-3333-444455556666' does not have authorization to perform action \
'Microsoft.Compute/virtualMachines/write' over scope '/subscriptions/0b1f6471-1bf0-4dda-aec3-111122223333/\
resourceGroups/hpcinfra-acme/providers/Microsoft.Compute/virtualMachines/head' or the scope is invalid."
"""


@pytest.mark.parametrize(
    "output, kept, hidden, failure_class",
    [
        (
            {"stdout": AWS_UP},
            ["UnauthorizedOperation", "ec2:RunInstances", "User: <arn> is not authorized", "<encoded>"],
            ["123456789012", "arn:aws", "hpcinfra-worker", "i-0a1b2c3d4e5f67890", AWS_ENCODED[:24], "1f3a9c52"],
            FailureClass.CONFIGURATION,
        ),
        (
            {"stdout": GCP_UP},
            ["QUOTA_EXCEEDED", "Quota 'N2_CPUS' exceeded", "Limit: 24.0 in region europe-west1"],
            ["418267305522", "https://", "googleapis.com/google.rpc"],
            FailureClass.CAPACITY_OR_QUOTA,
        ),
        (
            {"stdout": AZURE_UP},
            ["AuthorizationFailed", "Microsoft.Compute/virtualMachines/write", "over scope '<path>'"],
            ["c0ffee00", "0b1f6471", "/subscriptions/", "hpcinfra-acme"],
            FailureClass.CONFIGURATION,
        ),
        (
            {
                "stderr": "error: problem logging in: unable to open bucket s3://hpcinfra-state-123456789012/pulumi"
                "?region=eu-west-1: dial tcp 10.0.3.12:443: connect: connection refused"
            },
            ["problem logging in: unable to open bucket <url>", "dial tcp <address>: connect: connection refused"],
            ["s3://", "hpcinfra-state", "123456789012", "10.0.3.12"],
            FailureClass.CONFIGURATION,
        ),
        (
            {
                "stderr": 'error: failed to load checkpoint: blob (key ".pulumi/stacks/hpcinfra/acme-5e0c3c0e.json") '
                '(code=Unknown): RequestError: send request failed\ncaused by: Get "https://hpcinfra-state-123456789012'
                '.s3.eu-west-1.amazonaws.com/.pulumi/stacks/hpcinfra/acme-5e0c3c0e.json": dial tcp 10.0.3.12:443: '
                "i/o timeout"
            },
            ["failed to load checkpoint", 'caused by: Get "<url>": dial tcp <address>: i/o timeout'],
            ["https://", "hpcinfra-state", "123456789012", "10.0.3.12"],
            FailureClass.TIMEOUT,
        ),
        (
            {
                "stderr": "error: could not create stack: open /var/lib/hpcinfra/pulumi-state/.pulumi/stacks/hpcinfra/"
                "acme-5e0c3c0e.json: permission denied\nerror: lookup postgres.internal.example on 10.0.0.2:53: no such host"
            },
            ["could not create stack: open <path>: permission denied", "lookup <address> on <address>: no such host"],
            ["/var/lib", "pulumi-state", "postgres.internal", "10.0.0.2"],
            FailureClass.CONFIGURATION,
        ),
    ],
    ids=["aws-unauthorized", "gcp-quota", "azure-unauthorized", "s3-backend", "s3-backend-timeout", "file-backend"],
)
def test_a_failure_tells_tenants_what_failed_and_nothing_about_the_worker(output, kept, hidden, failure_class, caplog):
    error = failed(**output)
    with caplog.at_level(logging.WARNING, logger="infra.clouds.runner"):
        failure = _classified(error, "acme-5e0c3c0e")
    assert failure.failure_class is failure_class  # classified on the whole output, before it is cut down
    assert len(failure.message) <= 400
    for words in kept:
        assert words in failure.message
    for part in hidden:
        assert part not in failure.message
    assert str(error) in caplog.text and "acme-5e0c3c0e" in caplog.text  # the whole output is in the worker's log


@pytest.mark.parametrize(
    "said, seen",
    [
        ("dial tcp [2001:db8::1]:443 and fe80::1ff:fe23:4567:890a", "dial tcp [<address>]:443 and <address>"),
        ("hpcinfra-worker@acme-eda.iam.gserviceaccount.com lacks it", "<principal> lacks it"),
        ("for 'projects/acme-eda-prod/zones/europe-west1-b'", "for 'projects/<project>/zones/europe-west1-b'"),
        # AWS's documented example key id, put together here so that no scanner takes it for a real one.
        (
            f"InvalidClientTokenId: {'AKIA' + 'IOSFODNN7EXAMPLE'} is not valid",
            "InvalidClientTokenId: <access-key> is not valid",
        ),
        ("open C:\\Users\\worker\\state.json: denied; ~/.pulumi/credentials.json", "open <path>: denied; <path>"),
        ("HostID: Zx9Yq3Lm0Nb8Vc7Xz6Aa5Ss4Dd3Ff2Gg1Hh0Jj9Kk8Ll7=", "HostID: <encoded>"),
        ("failed lookup of the image", "failed lookup of the image"),
        # What a tenant needs and identifies nothing of the worker's is left as it is.
        ("urn:pulumi:acme-1::hpcinfra::aws:ec2/instance:Instance::head", None),
        ("at 2024-05-01T10:30:00Z after 12:30:45; i/o timeout; 24/7", None),
        ("Value (m6i.huge) for parameter instanceType is invalid: provider=aws@7.3.0", None),
        ("action 'Microsoft.Compute/virtualMachines/write'", None),
    ],
)
def test_placeholders_hide_the_workers_details_and_nothing_else(said, seen):
    assert redacted(said) == (said if seen is None else seen)


def test_a_failure_says_an_error_once_without_pulumis_own_summary():
    message = _classified(failed(stdout=AWS_UP), "acme-1").message
    assert message.count("UnauthorizedOperation") == 1
    assert "update failed" not in message and "provider2.go" not in message


def test_a_failure_without_an_error_line_says_where_the_output_is():
    failure = _classified(failed(stdout="Updating (acme-1):\n", stderr="", code=137), "acme-1")
    assert (
        failure.message
        == "the Pulumi CLI failed (exit code 137) without an error line; the worker's log has its output"
    )


def test_the_cli_runs_with_the_workers_environment_less_the_platforms_own_variables(tmp_path, monkeypatch):
    kept = {
        "PATH": "/usr/bin:/bin",
        "HOME": "/home/worker",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "HTTPS_PROXY": "http://proxy.example:3128",
        "NO_PROXY": "169.254.169.254",
        "TMPDIR": "/tmp/worker",
        "PULUMI_HOME": "/var/lib/hpcinfra/pulumi-home",
        "PULUMI_ACCESS_TOKEN": "pul-token",
        "AWS_PROFILE": "hpcinfra-worker",
        "AWS_WEB_IDENTITY_TOKEN_FILE": "/var/run/secrets/token",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://169.254.170.23/v1/credentials",
        "GOOGLE_APPLICATION_CREDENTIALS": "/etc/gcp.json",
        "CLOUDSDK_CORE_PROJECT": "acme-eda",
        "ARM_CLIENT_ID": "c0ffee00-1111-2222-3333-444455556666",
        "AZURE_FEDERATED_TOKEN_FILE": "/var/run/secrets/azure",
        "IDENTITY_ENDPOINT": "http://169.254.169.254/metadata/identity",
        "SSL_CERT_FILE": "/etc/ssl/certs/ca.pem",
    }
    platform = {
        "HPCINFRA_CREDENTIAL_KEYS": "fake-credential-key",
        "HPCINFRA_DATABASE_URL": "postgresql+psycopg://hpcinfra:fake-db-password@db/hpcinfra",
        "HPCINFRA_PULUMI_PASSPHRASE": "fake-passphrase",
        "HPCINFRA_OIDC_ISSUER": "https://login.example",
        "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer fake-collector-token",
        "OTEL_SERVICE_NAME": "hpcinfra-worker",
        "TEMPORAL_API_KEY": "fake-temporal-key",
        "PGPASSWORD": "fake-db-password",
    }
    bin_dir, calls = fake_cli(tmp_path, monkeypatch)
    launcher = cloud_pulumi_command(str(Path(bin_dir) / "pulumi"), tmp_path / "launcher").command
    subprocess.run([launcher, "version"], env={**kept, **platform}, check=True, capture_output=True)
    run = json.loads(Path(calls).read_text().splitlines()[-1])  # after the version check Pulumi makes itself
    assert run["env"] == {**kept, "PATH": f"{bin_dir}{os.pathsep}{kept['PATH']}"}


# Stands in for the Pulumi CLI: records how it was started, answers `version`, and succeeds.
FAKE_CLI = """#!{python}
import json, os, sys
with open({calls!r}, "a") as calls:
    calls.write(json.dumps({{"args": sys.argv[1:], "env": dict(os.environ)}}) + "\\n")
if sys.argv[1:] == ["version"]:
    print("v3.205.0")
if "up" in sys.argv:
    print("Updating (acme-1):")
    print("error: the stack is currently locked by 1 lock(s)", file=sys.stderr)
    sys.exit(255)
"""


def fake_cli(tmp_path, monkeypatch) -> tuple[str, str]:
    """A stand-in Pulumi CLI on the PATH; returns its folder and the file it records its runs in."""
    bin_dir, calls = tmp_path / "pulumi" / "bin", tmp_path / "calls.jsonl"
    bin_dir.mkdir(parents=True)
    (bin_dir / "pulumi").write_text(FAKE_CLI.format(python=sys.executable, calls=str(calls)))
    (bin_dir / "pulumi").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return str(bin_dir), str(calls)


def test_pulumi_and_its_plugins_run_without_the_platforms_variables(tmp_path, monkeypatch):
    bin_dir, calls = fake_cli(tmp_path, monkeypatch)
    secrets = {
        "HPCINFRA_CREDENTIAL_KEYS": "fake-credential-key",
        "HPCINFRA_DATABASE_URL": "postgresql+psycopg://hpcinfra:fake-db-password@db/hpcinfra",
        "HPCINFRA_PULUMI_PASSPHRASE": "fake-passphrase",
        "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer fake-collector-token",
    }
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_PROFILE", "hpcinfra-worker")

    StackRunner(settings(tmp_path))._stack("acme-1", lambda: None)

    runs = [json.loads(line) for line in Path(calls).read_text().splitlines()]
    assert runs[0]["args"] == ["version"] and any("stack" in run["args"] for run in runs[1:])
    for run in runs:
        env = run["env"]
        assert not [name for name in env if name.startswith(("HPCINFRA_", "OTEL_"))]
        assert not [name for name, value in env.items() for secret in secrets.values() if secret in value]
        assert env["AWS_PROFILE"] == "hpcinfra-worker"
        assert env["PATH"].split(os.pathsep)[0] == bin_dir
    assert all(run["env"]["PULUMI_CONFIG_PASSPHRASE"] == "test passphrase" for run in runs[1:])


def test_pulumi_commands_fail_as_pulumis_own_do(tmp_path, monkeypatch):
    bin_dir, calls = fake_cli(tmp_path, monkeypatch)
    command = cloud_pulumi_command(str(Path(bin_dir) / "pulumi"), tmp_path / "launcher")
    out: list[str] = []
    err: list[str] = []
    with pytest.raises(auto.ConcurrentUpdateError) as failure:  # the runner takes a dead run's lock back on this
        command.run(["up", "--yes"], str(tmp_path), {}, out.append, err.append)
    assert out == ["Updating (acme-1):"] and err == ["error: the stack is currently locked by 1 lock(s)"]
    assert "code: 255" in str(failure.value)
    assert json.loads(Path(calls).read_text().splitlines()[-1])["args"] == ["--non-interactive", "up", "--yes"]


def test_stack_names_come_from_tenant_and_cluster():
    assert stack_name("Acme Chips, Inc.", "5e0c3c0e") == "Acme-Chips-Inc.-5e0c3c0e"


def test_a_passphrase_is_required_for_passphrase_secrets(tmp_path):
    runner = StackRunner(settings(tmp_path, passphrase=""))
    with pytest.raises(ProviderFailure, match="HPCINFRA_PULUMI_PASSPHRASE"):
        runner.up("acme-1", lambda: None, {}, lambda line: None)


@needs_cli
def test_up_outputs_and_destroy_on_a_file_backend(tmp_path):
    runner = StackRunner(settings(tmp_path))
    lines: list[str] = []

    def program() -> None:
        pulumi.export("headNode", "10.20.1.10")
        pulumi.export("password", pulumi.Output.secret("s3cret"))

    outputs = runner.up("acme-1", program, {}, lines.append)
    assert outputs["headNode"] == "10.20.1.10"
    state = (tmp_path / "state").rglob("*.json")
    assert not any("s3cret" in path.read_text() for path in state)  # secrets are encrypted in the state
    runner.destroy("acme-1", program, lines.append)


@needs_cli
def test_a_lock_left_by_a_dead_run_is_taken_back(tmp_path):
    runner = StackRunner(settings(tmp_path))
    runner.up("acme-2", lambda: pulumi.export("ok", True), {}, lambda line: None)
    # What a run killed mid-update leaves in a file backend: its lock.
    locks = tmp_path / "state" / ".pulumi" / "locks" / "organization" / "hpcinfra" / "acme-2"
    locks.mkdir(parents=True, exist_ok=True)
    (locks / f"{uuid.uuid4()}.json").write_text(json.dumps({"pid": 999999, "username": "gone", "hostname": "gone"}))
    outputs = runner.up("acme-2", lambda: pulumi.export("ok", True), {}, lambda line: None)
    assert outputs["ok"] is True


def test_a_cancelled_run_asks_pulumi_to_stop_and_waits_for_it(tmp_path):
    from infra.providers.pulumi_provider import PulumiProvider

    class SlowRunner:
        """Stands in for the CLI: an update that runs until it is asked to stop, then records its state."""

        def __init__(self) -> None:
            self.stop = threading.Event()
            self.recorded = False

        def up(self, stack, program, config, progress, recover):
            self.stop.wait(timeout=30)
            self.recorded = True
            return {}

        def cancel(self, stack, program):
            self.stop.set()

    runner = SlowRunner()
    provider = PulumiProvider("aws", runner)

    async def cancel_midway():
        task = asyncio.ensure_future(provider.up(cluster(), lambda line: None))
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_midway())
    assert runner.stop.is_set() and runner.recorded  # stopped on request, and finished recording before giving up
