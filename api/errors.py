"""Errors as RFC 9457 problem details (`application/problem+json`), with a message a person can act on."""

import json
import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.credentials import UndecryptableSecret
from core.observability import path_templates
from core.refusals import REFUSALS, Refused

log = logging.getLogger(__name__)
PROBLEM = "application/problem+json"
PROBLEM_REF = "#/components/schemas/Problem"


class ProblemField(BaseModel):
    field: str
    message: str


class ProblemDocument(BaseModel):
    """An error answer (RFC 9457), for the OpenAPI document: `detail` says what to change. Some problems
    carry more members (`errors`, one per invalid field, and others)."""

    model_config = ConfigDict(extra="allow", title="Problem")

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    errors: list[ProblemField] | None = None


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: the error statuses it answers itself, each a problem document. (Those the
    shared machinery answers to every operation are documented for all of them: see `_document`.)"""
    return {status: _problem_response(HTTPStatus(status).phrase) for status in statuses}


def _problem_response(description: str) -> dict[str, Any]:
    return {"description": description, "content": {PROBLEM: {"schema": {"$ref": PROBLEM_REF}}}}


# What the shared machinery may answer to an operation, whatever its route does:
# - every operation that needs a token (declares the bearer security scheme):
_SECURED = {
    401: "No valid token (api/auth.py)",
    429: "Too many calls from this caller in a minute (api/limits.py)",
    503: "A service the API needs is unreachable: the identity provider (api/auth.py), the workflow engine",
}
# - every operation with a path id: it is not one the caller can see (api/access.py);
_WITH_PATH_ID = {404: "Not found, or not one you can see"}
# - every operation that takes a body: it is over the size limit (api/limits.py), or not valid;
_WITH_BODY = {413: "The body is over the size limit", 422: "Invalid input"}
# - every POST: an Idempotency-Key being answered for an earlier call, or not valid (api/idempotency.py).
_POST = {409: "A call with the same Idempotency-Key is still being answered", 422: "Invalid input"}
_FASTAPI_422 = "#/components/schemas/HTTPValidationError"


class Problem(Exception):
    """Raise from a route to answer with a problem document."""

    def __init__(self, status: int, detail: str, *, headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers
        self.extra = extra


def problem_response(
    status: int, detail: str, *, instance: str | None = None, headers=None, **extra: Any
) -> JSONResponse:
    body = {"type": "about:blank", "title": HTTPStatus(status).phrase, "status": status, "detail": detail}
    if instance:
        body["instance"] = instance
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def _describe(error: dict[str, Any]) -> dict[str, Any]:
    location = list(error.get("loc", ()))
    if location and location[0] in ("body", "path", "query", "header"):
        location = location[1:]
    message = error.get("msg", "invalid")
    if error.get("type") == "json_invalid":
        # Its location is a character offset, not a field.
        return {
            "field": "",
            "message": f"the body is not valid JSON (error at character {location[0] if location else 0})",
        }
    message = message.removeprefix("Value error, ")
    return {"field": ".".join(str(part) for part in location), "message": message}


def _document(document: dict[str, Any]) -> dict[str, Any]:
    """The app's OpenAPI document, with every error answer documented as what it is: a problem document
    (FastAPI's own 422 schema describes its default answer, which `install` replaces)."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    problem = ProblemDocument.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(problem.pop("$defs", {}))
    schemas["Problem"] = problem
    for operations in document.get("paths", {}).values():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            common: dict[int, str] = {}
            if operation.get("security"):
                common |= _SECURED
            if any(p.get("in") == "path" for p in operation.get("parameters", [])):
                common |= _WITH_PATH_ID
            if "requestBody" in operation:
                common |= _WITH_BODY
            if method == "post" and operation.get("security"):
                common |= _POST
            for status, description in common.items():
                responses.setdefault(str(status), {"description": description})
            for status, response in responses.items():
                if status.isdigit() and int(status) >= 400 and _answered_by_install(response):
                    response["content"] = _problem_response(response["description"])["content"]
    if _FASTAPI_422 not in json.dumps(document.get("paths")):
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
    return document


def _answered_by_install(response: dict[str, Any]) -> bool:
    """An error response documented with no body, or with FastAPI's validation error: one whose answer
    comes from the handlers below, a problem document. (An error with a body of its own, such as
    /readyz's 503, keeps it.)"""
    content = response.get("content")
    if not content:
        return True
    return list(content) == ["application/json"] and content["application/json"].get("schema") == {"$ref": _FASTAPI_422}


def _allowed_methods(request: Request) -> list[str]:
    """The methods the OpenAPI document lists for the request's path (empty for a path it does not list)."""
    operations = request.app.openapi().get("paths", {})
    methods: set[str] = set()
    for pattern, template in path_templates(request.app):
        if pattern.fullmatch(request.url.path):
            methods |= {method.upper() for method in operations.get(template, {})}
    return sorted(methods)


# The errors a busy database raises, among others of the same classes: see database_busy.
DATABASE_ERRORS = (OperationalError, PoolTimeout)


def database_busy(exc: BaseException) -> bool:
    """Whether an error says the database was too busy, not broken: every connection this process has
    was in use for the pool's whole timeout, or (SQLite) other writers held the database for the whole
    busy timeout. Trying again shortly is the remedy."""
    if isinstance(exc, PoolTimeout):
        return True
    return isinstance(exc, OperationalError) and "database is locked" in str(exc.orig)


def busy_response(instance: str) -> JSONResponse:
    return problem_response(
        503, "the database was too busy to answer in time; try again shortly (a change retried with the "
        "same Idempotency-Key is made once)",
        instance=instance, headers={"Retry-After": "1"},
    )  # fmt: skip


class BusyDatabase:
    """A busy database is answered 503 with Retry-After, while no answer has started: in a route, and in
    the middleware's own database calls (token lookup, Idempotency-Key), which run outside the routes'
    exception handlers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def noting_start(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, noting_start)
        except DATABASE_ERRORS as e:
            if started or scope["type"] != "http" or not database_busy(e):
                raise
            log.warning("database busy on %s %s: %s", scope["method"], scope["path"], e)
            await busy_response(scope["path"])(scope, receive, send)


def undecryptable_detail() -> str:
    """The answer when a stored secret cannot be decrypted: the caller can do nothing but wait, and the
    operators find what to mend in the log (UndecryptableSecret names the setting)."""
    return (
        "a stored secret cannot be decrypted with the credential keys this server has; operators are told in "
        "its log (a key is missing from HPCINFRA_CREDENTIAL_KEYS). Try again once they have mended it"
    )


def install(app: FastAPI) -> None:
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _document(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(exc.status, exc.detail, instance=request.url.path, headers=exc.headers, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [_describe(e) for e in exc.errors()]
        detail = "; ".join(f"{e['field']}: {e['message']}" if e["field"] else e["message"] for e in errors)
        return problem_response(422, detail, instance=request.url.path, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        if exc.status_code == 400 and detail == "There was an error parsing the body":
            # FastAPI's answer to a body that is not even text (e.g. not UTF-8), or nested too deeply for
            # the JSON parser: malformed JSON like any other.
            detail = "the body is not valid JSON: send UTF-8 encoded JSON"
            if isinstance(exc.__cause__, RecursionError):
                detail = "the body is nested too deeply to be read; send JSON nested at most a few dozen levels"
            return problem_response(422, detail, instance=request.url.path)
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"there is no {request.url.path}"
        headers = getattr(exc, "headers", None)
        if exc.status_code == 405:
            # Starlette's Allow names the methods of one route on the path only; a path has a route per
            # method here, so name every method the document lists for it.
            allowed = _allowed_methods(request)
            if allowed:
                headers = {**(headers or {}), "Allow": ", ".join(allowed)}
            detail = f"{request.method} is not allowed on {request.url.path}"
            if allowed:
                detail += f"; allowed: {', '.join(allowed)}"
        return problem_response(exc.status_code, detail, instance=request.url.path, headers=headers)

    @app.exception_handler(Refused)
    async def _refused(request: Request, exc: Refused) -> JSONResponse:
        return problem_response(REFUSALS[exc.kind], exc.message, instance=request.url.path)

    @app.exception_handler(UndecryptableSecret)
    async def _undecryptable(request: Request, exc: UndecryptableSecret) -> JSONResponse:
        log.error("%s %s: %s", request.method, request.url.path, exc)
        return problem_response(503, undecryptable_detail(), instance=request.url.path)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return problem_response(500, "an unexpected error occurred; it has been logged", instance=request.url.path)
