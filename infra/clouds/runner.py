"""The Automation API runner: one Pulumi stack per cluster, state and secrets where the settings say.

Each call is blocking (run it in a thread). Engine events about resources are passed to `progress`;
the CLI's own output is kept only to explain a failure. Failures are classified the way the platform
classifies every provider failure (see core/providers.py). Pulumi runs without the platform's
own variables, and a failure's whole output goes to the worker's log while its message, which
tenants see, keeps only the error lines without what identifies the worker (see exposure.py).
"""

import logging
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi.automation as auto
from pulumi.automation.events import EngineEvent, OpType

from core.providers import FailureClass, ProviderFailure
from infra.clouds.exposure import cloud_pulumi_command, failure_message

log = logging.getLogger(__name__)

PROJECT = "hpcinfra"
DONE = {OpType.CREATE: "created", OpType.UPDATE: "updated", OpType.DELETE: "deleted", OpType.REPLACE: "replaced"}

# Words in a failed run's output that say what kind of failure it was; the first match wins.
CLASSIFIERS: list[tuple[FailureClass, re.Pattern[str]]] = [
    (
        FailureClass.CAPACITY_OR_QUOTA,
        re.compile(
            r"InsufficientInstanceCapacity|QUOTA_EXCEEDED|quota|ZONE_RESOURCE_POOL_EXHAUSTED|SkuNotAvailable|"
            r"AllocationFailed|VcpuLimitExceeded|InstanceLimitExceeded",
            re.I,
        ),
    ),  # fmt: skip
    (FailureClass.TIMEOUT, re.compile(r"timeout|timed out|deadline exceeded", re.I)),
    (
        FailureClass.OUTAGE,
        re.compile(
            r"RequestLimitExceeded|Throttl|ServiceUnavailable|InternalError|InternalServerError|"
            r"\b50[234]\b|connection reset|TooManyRequests",
            re.I,
        ),
    ),  # fmt: skip
]


@dataclass(frozen=True)
class StackSettings:
    backend_url: str  # e.g. file:///var/lib/hpcinfra/pulumi, s3://bucket, azblob://container
    secrets_provider: str  # "passphrase", or a KMS URL (awskms://..., gcpkms://..., azurekeyvault://...)
    passphrase: str  # for the passphrase secrets provider
    work_dir: Path  # where each stack keeps its project and config files


def pulumi_cli() -> str:
    """The Pulumi CLI, or a failure that says what to install (never worth retrying)."""
    installed_by_script = Path.home() / ".pulumi" / "bin" / "pulumi"
    found = shutil.which("pulumi") or (str(installed_by_script) if installed_by_script.exists() else None)
    if found is None:
        raise ProviderFailure(
            "provision",
            "the Pulumi CLI is not installed on the worker: install it (see the README, 'Real clouds'), make sure "
            "`pulumi` is on the worker's PATH, and retry the cluster",
            FailureClass.CONFIGURATION,
        )
    return found


class StackRunner:
    def __init__(self, settings: StackSettings) -> None:
        self.settings = settings

    def up(
        self,
        stack_name: str,
        program: Callable[[], None],
        config: dict[str, str],
        progress: Callable[[str], None],
        recover: bool = False,
    ) -> dict[str, Any]:
        """Bring the stack to what `program` describes; returns its outputs. `config` is the clouds'
        own settings (e.g. `aws:region`), never a secret: secrets are inside the program. With
        `recover`, a lock or pending operations left by a dead run are cleared first."""
        stack = self._stack(stack_name, program)

        def up() -> Any:
            stack.set_all_config({key: auto.ConfigValue(value) for key, value in config.items()})
            return stack.up(on_event=_reporter(progress), color="never")

        result = self._run(stack, recover, up)
        return {key: value.value for key, value in result.outputs.items()}

    def destroy(
        self, stack_name: str, program: Callable[[], None], progress: Callable[[str], None], recover: bool = False
    ) -> None:
        stack = self._stack(stack_name, program)
        self._run(stack, recover, lambda: stack.destroy(on_event=_reporter(progress), color="never"))

    def refresh(self, stack_name: str, program: Callable[[], None]) -> dict[str, Any]:
        """Read the cloud's view of the stack's resources; returns the outputs."""
        stack = self._stack(stack_name, program)
        self._run(stack, False, lambda: stack.refresh(color="never"))
        return {key: value.value for key, value in stack.outputs().items()}

    def cancel(self, stack_name: str, program: Callable[[], None]) -> None:
        """Ask the update under way on the stack to stop: Pulumi finishes the operations in flight,
        records them in the state and stops (backends that cannot cancel let the update finish)."""
        try:
            self._stack(stack_name, program).cancel()
        except (auto.CommandError, ProviderFailure):
            pass

    def _run(self, stack: auto.Stack, recover: bool, operation: Callable[[], Any]) -> Any:
        try:
            if recover:
                self._recover(stack)
            try:
                return operation()
            except auto.ConcurrentUpdateError:
                # The stack is locked. The workflow runs one provider operation per cluster at a time, so
                # the holder is a run that died: take the lock back, learn what it left, go again once.
                self._recover(stack)
                return operation()
        except auto.CommandError as e:
            raise _classified(e, stack.name) from None

    @staticmethod
    def _recover(stack: auto.Stack) -> None:
        try:
            stack.cancel()
        except auto.CommandError:
            pass  # nothing was running, or this backend cancels by letting the lock go
        # Resources a dead run was creating are unknown to the state: forget them, and read the cloud again.
        stack.refresh(clear_pending_creates=True, color="never")

    def _stack(self, stack_name: str, program: Callable[[], None]) -> auto.Stack:
        work_dir = self.settings.work_dir / stack_name
        work_dir.mkdir(parents=True, exist_ok=True)
        env = {"PULUMI_SKIP_UPDATE_CHECK": "true"}
        if self.settings.secrets_provider == "passphrase":
            if not self.settings.passphrase:
                raise ProviderFailure(
                    "provision",
                    "HPCINFRA_PULUMI_PASSPHRASE is not set on the worker (or set HPCINFRA_PULUMI_SECRETS_PROVIDER to a KMS)",
                    FailureClass.CONFIGURATION,
                )
            env["PULUMI_CONFIG_PASSPHRASE"] = self.settings.passphrase
        options = auto.LocalWorkspaceOptions(
            work_dir=str(work_dir),
            project_settings=auto.ProjectSettings(
                name=PROJECT, runtime="python", backend=auto.ProjectBackend(self.settings.backend_url)
            ),
            secrets_provider=self.settings.secrets_provider,
            env_vars=env,  # over the worker's environment less the platform's own variables
            pulumi_command=cloud_pulumi_command(pulumi_cli(), self.settings.work_dir / ".cli"),
        )
        return auto.create_or_select_stack(stack_name, project_name=PROJECT, program=program, opts=options)


def stack_name(tenant: str, cluster_id: str) -> str:
    return f"{re.sub(r'[^A-Za-z0-9_.-]+', '-', tenant).strip('-')[:40]}-{cluster_id}"


def _reporter(progress: Callable[[str], None]) -> Callable[[EngineEvent], None]:
    def report(event: EngineEvent) -> None:
        outputs = event.res_outputs_event
        if outputs is None or outputs.metadata.op not in DONE:
            return
        urn = outputs.metadata.urn
        progress(f"{urn.rsplit('::', 1)[-1]}: {outputs.metadata.type} {DONE[outputs.metadata.op]}")

    return report


def _classified(error: auto.CommandError, stack: str) -> ProviderFailure:
    text = str(error)
    # On the whole output: the words that tell the class may be in what the message leaves out.
    failure_class = next((c for c, pattern in CLASSIFIERS if pattern.search(text)), FailureClass.CONFIGURATION)
    # Pulumi prints secrets as [secret]; the rest (accounts, roles, addresses) is for operators only.
    log.warning("pulumi failed on stack %s (%s):%s", stack, failure_class, text)
    return ProviderFailure("pulumi", failure_message(text), failure_class)
