"""The Automation API runner and the cloud providers around it.

Without the Pulumi CLI (as on the machines this project is developed on: no package registry it
installs from ships it), provisioning on a cloud fails at once with a message that says what to
install; that path, and how failures are classified, are tested everywhere. The runner's own work
with the CLI (a real stack on a local file backend, a lock left by a dead run) is tested where the
CLI is installed, and skipped with that reason where it is not.
"""

import asyncio
import json
import shutil
import threading
import time
import uuid
from dataclasses import replace

import pulumi
import pulumi.automation as auto
import pytest

from infra.catalog import NODE_TYPES
from infra.clouds.runner import StackRunner, StackSettings, _classified, stack_name
from infra.providers import ProviderSettings, get_provider
from infra.providers.base import ClusterSpec, FailureClass, ProviderFailure

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
    error = auto.CommandError(auto._cmd.CommandResult(stdout="", stderr=output, code=1))
    failure = _classified(error)
    assert str(failure.failure_class) == failure_class
    assert failure.failure_class.retryable == (failure_class in ("provider outage", "timeout"))


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
