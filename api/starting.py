"""Starting the workflow that owns a row the API has just written."""

from collections.abc import Awaitable

from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session
from temporalio.service import RPCError

from api.errors import Problem


async def start_or_take_back(start: Awaitable[object], session: Session, row: object, what: str) -> None:
    """Await `start`; if the workflow engine refuses it, delete `row` again: a request or cluster
    without its workflow would never move, so the caller is told nothing was made and to retry."""
    try:
        await start
    except RPCError as e:

        def take_back() -> None:
            session.delete(row)
            session.commit()

        await run_in_threadpool(take_back)
        raise Problem(
            503, f"the workflow engine did not accept the {what}; nothing was created, try again shortly"
        ) from e
