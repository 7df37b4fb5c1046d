"""Talking to the hpcinfra HTTP API for the user commands: where the server is and who is calling
(environment or config file), and every failure turned into one line a person can act on.

Nothing here prints the token: it goes into the Authorization header and nowhere else.
"""

import os
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any, NoReturn

import httpx
import typer

DEFAULT_CONFIG = Path("~/.config/hpcinfra/config.toml")
API_PREFIX = "/api/v1"
DEFAULT_TIMEOUT = 30.0
HOW_TO_CONFIGURE = (
    "set HPCINFRA_URL and HPCINFRA_TOKEN (the `make dev` banner shows both), or put `url` and `token` in {path}"
)


def fail(message: str, code: int = 1) -> NoReturn:
    """One line on stderr and a non-zero exit: what every user command does when it cannot go on."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@dataclass(frozen=True)
class Config:
    url: str  # the API's base, ending in /api/v1
    token: str = ""
    timeout: float = DEFAULT_TIMEOUT

    def __repr__(self) -> str:  # so the token cannot end up in a traceback or a log by accident
        return f"Config(url={self.url!r}, token=<hidden>, timeout={self.timeout})"


def config_path() -> Path:
    return Path(os.environ.get("HPCINFRA_CONFIG") or DEFAULT_CONFIG).expanduser()


def _read_file(path: Path, named: bool) -> dict[str, Any]:
    """The config file's settings; nothing when the default file does not exist. A file named by
    HPCINFRA_CONFIG must exist: a typo there should not silently mean "no settings"."""
    try:
        with path.open("rb") as f:
            settings = tomllib.load(f)
    except FileNotFoundError:
        if named:
            fail(f"HPCINFRA_CONFIG names {path}, which does not exist")
        return {}
    except OSError as e:
        fail(f"cannot read the config file {path}: {e.strerror}")
    except tomllib.TOMLDecodeError as e:
        fail(f"the config file {path} is not valid TOML: {e}")
    for key in ("url", "token"):
        if key in settings and not isinstance(settings[key], str):
            fail(f"`{key}` in {path} must be a string")
    if "timeout" in settings and not isinstance(settings["timeout"], int | float):
        fail(f"`timeout` in {path} must be a number of seconds")
    return settings


def base_url(url: str) -> str:
    """The API base for `url`: the server's address alone, or with /api/v1 as the banner prints it."""
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        fail(f"the server URL {url!r} must start with http:// or https://, e.g. http://127.0.0.1:8000/api/v1")
    return url if url.endswith(API_PREFIX) else url + API_PREFIX


def load_config() -> Config:
    """Server, token and timeout: each from the environment if set there, else from the config file."""
    path = config_path()
    settings = _read_file(path, named=bool(os.environ.get("HPCINFRA_CONFIG")))
    url = os.environ.get("HPCINFRA_URL") or settings.get("url", "")
    token = os.environ.get("HPCINFRA_TOKEN") or settings.get("token", "")
    if not url:
        fail("no server to talk to: " + HOW_TO_CONFIGURE.format(path=path))
    if not token.strip():
        fail("no API token: " + HOW_TO_CONFIGURE.format(path=path))
    timeout = os.environ.get("HPCINFRA_HTTP_TIMEOUT") or settings.get("timeout", DEFAULT_TIMEOUT)
    try:
        timeout = float(timeout)
    except ValueError:
        fail(f"HPCINFRA_HTTP_TIMEOUT must be a number of seconds, not {timeout!r}")
    if not timeout > 0:
        fail("the HTTP timeout must be more than 0 seconds")
    return Config(base_url(url), token.strip(), timeout)


def problem_line(response: httpx.Response) -> str:
    """An error answer as one line: the problem document's title and detail, and the fields a 422
    names that its detail does not already mention."""
    try:
        problem = response.json()
    except ValueError:
        problem = None
    if not isinstance(problem, dict):
        text = " ".join(response.text.split())[:200]
        return f"{response.status_code} {_phrase(response.status_code)}" + (f": {text}" if text else "")
    title = problem.get("title") or _phrase(response.status_code)
    detail = str(problem.get("detail") or "")
    line = f"{response.status_code} {title}" + (f": {detail}" if detail else "")
    fields = [
        f"{e.get('field')}: {e.get('message')}" if e.get("field") else str(e.get("message"))
        for e in problem.get("errors") or []
        if isinstance(e, dict)
    ]
    missing = [f for f in fields if f not in detail]
    if missing:
        line += " (" + "; ".join(missing) + ")"
    if response.status_code == 401:
        line += "; check HPCINFRA_TOKEN (or `token` in the config file)"
    return line


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


class Api:
    """The API's calls as the commands need them: the JSON of a successful answer, or `fail`."""

    def __init__(self, config: Config, transport: httpx.BaseTransport | None = None) -> None:
        self.config = config
        self._http = httpx.Client(
            base_url=config.url,
            headers={"Authorization": f"Bearer {config.token}", "Accept": "application/json"},
            timeout=config.timeout,
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def call(
        self, method: str, path: str, *, params: dict[str, Any] | None = None, body: Any = None, check: bool = True
    ) -> httpx.Response:
        """The API's answer; an error answer (4xx, 5xx) ends the command with its problem, unless not `check`."""
        params = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            response = self._http.request(method, path, params=params, json=body)
        except httpx.ConnectError:
            fail(f"cannot connect to the hpcinfra API at {self.config.url}: is it running, and is HPCINFRA_URL right?")
        except httpx.TimeoutException:
            fail(f"the hpcinfra API at {self.config.url} did not answer within {self.config.timeout:g} seconds")
        except httpx.HTTPError as e:  # a broken connection, a protocol error, a malformed URL
            fail(f"talking to the hpcinfra API at {self.config.url} failed: {type(e).__name__}: {e}")
        if check and response.status_code >= 400:
            fail(problem_line(response))
        return response

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.call(method, path, **kwargs)
        try:
            return response.json()
        except ValueError:
            fail(f"the server at {self.config.url} answered {method} {path} with something that is not JSON")

    def get(self, path: str, **params: Any) -> Any:
        return self.json("GET", path, params=params)

    def post(self, path: str, body: Any) -> Any:
        return self.json("POST", path, body=body)

    def pages(self, path: str, *, limit: int = 500, most: int = 10_000, **params: Any) -> list[Any]:
        """Every item of a paged list (limit/offset), up to `most`."""
        items: list[Any] = []
        while len(items) < most:
            page = self.get(path, limit=limit, offset=len(items), **params)
            items.extend(page)
            if len(page) < limit:
                break
        return items


@contextmanager
def connect() -> Iterator[Api]:
    api = Api(load_config())
    try:
        yield api
    finally:
        api.close()
