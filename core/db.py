"""Engine and session factory for SQLite and PostgreSQL."""

import fcntl
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

# How long a SQLite writer waits for its turn among its process's writers, and then again for SQLite's
# lock: twice this is still shorter than any database activity's timeout (30 s).
LOCK_WAIT_SECONDS = 10
# Connections per process: as many as the threads that may hold one at a time (the API's thread pool
# has 40, the worker's activity executor 32). With fewer, threads waiting for a connection can hold
# the thread tokens that the requests holding connections need to finish, and everything waits for
# the pool's timeout.
POOL_SIZE, POOL_OVERFLOW = 40, 4


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        database = url.split("///", 1)[-1]
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        # The API and the worker are separate processes writing one file: WAL lets readers go on
        # while one writes, and the busy timeout makes a writer wait for the lock instead of failing.
        engine = create_engine(
            url,
            connect_args={"timeout": LOCK_WAIT_SECONDS, "check_same_thread": False},
            pool_size=POOL_SIZE,
            max_overflow=POOL_OVERFLOW,
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={int(LOCK_WAIT_SECONDS * 1000)}")
            cursor.close()

        _one_writer_at_a_time(engine, Path(database) if database and database != ":memory:" else None)
        return engine
    engine = create_engine(url, pool_pre_ping=True, pool_size=POOL_SIZE, max_overflow=POOL_OVERFLOW)

    @event.listens_for(engine, "connect")
    def _postgresql_settings(dbapi_connection, _record) -> None:
        # The API's queries are short and indexed: compiling them (JIT) costs more than it saves.
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SET jit = off")
        dbapi_connection.commit()

    return engine


_WRITE = re.compile(r"\s*(INSERT|UPDATE|DELETE|REPLACE)\b", re.IGNORECASE)


def _one_writer_at_a_time(engine: Engine, database: Path | None) -> None:
    """SQLite's writers take turns by polling: a writer that finds the lock taken sleeps and looks
    again, backing off to a tenth of a second, so while other writers hand the lock on without a gap it
    can lose every turn for the whole busy timeout. Writers queue instead, from their first write to
    their commit or rollback (the span in which SQLite holds its write lock): within a process on a
    lock, and the processes on a file beside the database (`<database>-writer`), which each process's
    writer of the moment holds while it writes and looks at every millisecond while it waits."""
    turn = threading.Lock()
    between_processes = _FileTurn(database.with_name(database.name + "-writer")) if database else None

    @event.listens_for(engine, "before_cursor_execute")
    def _take_turn(connection, _cursor, statement, _parameters, _context, _executemany) -> None:
        if connection.info.get("writing") or not _WRITE.match(statement):
            return
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        if not turn.acquire(timeout=LOCK_WAIT_SECONDS):
            raise sqlite3.OperationalError("database is locked (other writers of this process held it)")
        if between_processes and not between_processes.take(deadline):
            turn.release()
            raise sqlite3.OperationalError("database is locked (another process's writer held it)")
        connection.info["writing"] = True

    def _end_turn(info: dict) -> None:
        if info.pop("writing", False):
            if between_processes:
                between_processes.give_back()
            turn.release()

    def _end_turn_of(connection) -> None:
        if not connection.invalidated:  # else its turn ended when it was invalidated, below
            _end_turn(connection.info)

    event.listen(engine, "commit", _end_turn_of)
    event.listen(engine, "rollback", _end_turn_of)
    # A connection handed back without either (the pool rolls it back itself), or dropped as broken
    # (its info is cleared then).
    event.listen(engine, "checkin", lambda _dbapi_connection, record: _end_turn(record.info))
    event.listen(engine, "invalidate", lambda _dbapi_connection, record, _error: _end_turn(record.info))


class _FileTurn:
    """An exclusive lock on a file, held by at most one thread of this process at a time (the caller's
    in-process turn sees to that), which the kernel lets go when the process ends however it ends."""

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)

    def take(self, deadline: float) -> bool:
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    return False
                time.sleep(0.001)

    def give_back(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)


# Something every session of a factory does on its events (SQLAlchemy `event.listen` on the factory).
SessionHook = Callable[[sessionmaker[Session]], None]


def make_session_factory(engine: Engine, *, hooks: Sequence[SessionHook]) -> sessionmaker[Session]:
    """Sessions on `engine` with `hooks` installed. Each process names its hooks where it makes its
    factory (the application's: services.credits.keep_standing_rates, which keeps the tenants'
    standing rates in step with every commit)."""
    sessions = sessionmaker(engine, expire_on_commit=False)
    for hook in hooks:
        hook(sessions)
    return sessions


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session whose work is committed when the block ends and rolled back if it raises."""
    with factory() as session, session.begin():
        yield session
