"""The refusals: the domain's "no" to something a person can correct, each kind with the HTTP status the
API answers it with; the exception the domain raises for one (Refused); and turning an activity's
failure inside an update handler into the update's answer."""

from temporalio.exceptions import ActivityError, ApplicationError

# Refusals an activity or a workflow raises (ApplicationError types) that a person can act on, each with
# the HTTP status the API answers it with (api/workflow_calls.py); any other failure of an update means
# "not recorded, try again".
REFUSALS = {
    "AlreadyDecided": 409,
    "Conflict": 409,
    "NotAllowed": 403,
    "NotAnApprover": 403,
    "NotFound": 404,
    "Invalid": 422,
}


def as_update_failure(error: ActivityError, what: str) -> ApplicationError:
    """The error for an update handler to raise: the activity's own refusal, or that `what` was not
    recorded (never the activity's internal message, which may name database details)."""
    cause = error.cause
    if isinstance(cause, ApplicationError) and cause.type in REFUSALS:
        return ApplicationError(cause.message, type=cause.type)
    return ApplicationError(f"{what} could not be recorded", type="NotRecorded")


class Refused(Exception):
    """A domain rule says no, for a reason the caller can act on (the message says which). `kind` is one of
    REFUSALS, the refusals the workflows raise too, so every caller answers it the same way (the API
    through its handler in api/errors.py)."""

    def __init__(self, kind: str, message: str) -> None:
        if kind not in REFUSALS:
            raise ValueError(f"unknown refusal {kind!r}; the refusals are {', '.join(REFUSALS)}")
        super().__init__(message)
        self.kind = kind
        self.message = message
