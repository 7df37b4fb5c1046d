"""Replay tests: a non-deterministic change to a workflow fails the build.

tests/histories/ holds event histories of real runs of every workflow type in worker.WORKFLOWS, recorded
by tests/utils/record_histories.py (its docstring lists the scenarios). Each is replayed here against the
workflow code as it is now, with no server: a change that makes the code issue other commands than the
history holds (another activity, a timer more or less, another order) is a non-determinism error, the
error a worker would hit on every execution of that workflow already running.

After an intentional change: if executions of the old code may be running anywhere, make the change
with `workflow.patched(...)` so that they replay, keep the old histories and record new ones next to
them; only when none can be running, re-record (`.venv/bin/python -m tests.utils.record_histories`)
and commit the new files. A new workflow type needs a scenario in the recorder: the coverage test
below fails until it has a history.
"""

import asyncio
import json
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from core.messages import RequestInput, RequestState
from worker import WORKFLOWS
from workflows.request import RequestWorkflow

HISTORIES = Path(__file__).parent / "histories"
FILES = sorted(HISTORIES.glob("*.json"))


def started(path: Path) -> dict:
    return json.loads(path.read_text())["events"][0]["workflowExecutionStartedEventAttributes"]


def load(path: Path) -> WorkflowHistory:
    # Older servers do not record the workflow id in the history; replaying does not depend on it.
    return WorkflowHistory.from_json(started(path).get("workflowId", path.stem), path.read_text())


def workflow_type(path: Path) -> str:
    return started(path)["workflowType"]["name"]


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_recorded_history_replays(path: Path):
    asyncio.run(Replayer(workflows=WORKFLOWS).replay_workflow(load(path)))


def test_every_workflow_type_has_a_recorded_history():
    names = {workflow._Definition.must_from_class(cls).name for cls in WORKFLOWS}
    recorded = {workflow_type(path) for path in FILES}
    missing = sorted(names - recorded)
    assert not missing, (
        f"no history in {HISTORIES.name}/ for workflow type(s) {missing}: add a scenario to "
        "tests/utils/record_histories.py and re-record"
    )


# Not sandboxed: the sandbox would import this test module again, which pytest's assertion rewriting does
# not survive. Non-determinism is found by the SDK's core, comparing commands with events, not by the sandbox.
@workflow.defn(name="ClusterRequest", sandboxed=False)
class ChangedRequestWorkflow(RequestWorkflow):
    """The request workflow with one change that does not replay: an activity before anything else
    (the recorded run began with the expiry's timer)."""

    @workflow.run
    async def run(self, input: RequestInput) -> RequestState:
        await workflow.execute_activity("SendReminder", input.request_id, start_to_close_timeout=timedelta(minutes=1))
        return await super().run(input)


def test_a_non_deterministic_change_fails_the_replay():
    approved = load(HISTORIES / "request-approved-by-update.json")
    assert approved.events[0].workflow_execution_started_event_attributes.workflow_type.name == "ClusterRequest"
    asyncio.run(Replayer(workflows=[RequestWorkflow]).replay_workflow(approved))  # unchanged, it replays
    with pytest.raises(workflow.NondeterminismError) as raised:
        asyncio.run(Replayer(workflows=[ChangedRequestWorkflow]).replay_workflow(approved))
    assert "TMPRL1100" in str(raised.value), raised.value  # Temporal's code for non-determinism
