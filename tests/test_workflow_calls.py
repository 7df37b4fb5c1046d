"""How the API's calls into workflows turn Temporal's answers into HTTP answers (api/workflow_calls.py)."""

import asyncio
from datetime import timedelta

import pytest
from temporalio.service import RPCError, RPCStatusCode

from api import workflow_calls
from api.errors import Problem


class BusyWorkflow:
    """A workflow handle whose first `busy` updates are turned away as Temporal turns away updates past a
    workflow's limit of in-flight updates; Temporal itself cannot be made to do it on cue."""

    def __init__(self, busy: int) -> None:
        self.busy, self.calls = busy, 0

    async def execute_update(self, method, *, args, rpc_timeout):
        self.calls += 1
        if self.calls <= self.busy:
            raise RPCError(
                "limit on number of concurrent in-flight updates has been reached",
                RPCStatusCode.RESOURCE_EXHAUSTED,
                b"",
            )
        return ("decided", args)


def decide(handle) -> object:
    return asyncio.run(workflow_calls.update(handle, "decide", "approved", refused="refused", ended="ended"))


def test_an_update_turned_away_while_its_workflow_is_busy_waits_its_turn() -> None:
    handle = BusyWorkflow(busy=3)
    assert decide(handle) == ("decided", ["approved"])
    assert handle.calls == 4


def test_an_update_still_turned_away_when_its_time_is_up_is_a_503_that_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(workflow_calls, "UPDATE_TIMEOUT", timedelta(seconds=0.5))
    with pytest.raises(Problem) as answer:
        decide(BusyWorkflow(busy=1_000))
    assert answer.value.status == 503 and "too many changes" in answer.value.detail
