"""Turning an activity's failure inside an update handler into the update's answer."""

from temporalio.exceptions import ActivityError, ApplicationError

# Refusals an activity raises that a person can act on (the API maps each to its HTTP status);
# any other failure means "not recorded, try again".
REFUSALS = ("AlreadyDecided", "NotAnApprover", "NotFound", "Conflict", "Invalid")


def as_update_failure(error: ActivityError, what: str) -> ApplicationError:
    """The error for an update handler to raise: the activity's own refusal, or that `what` was not
    recorded (never the activity's internal message, which may name database details)."""
    cause = error.cause
    if isinstance(cause, ApplicationError) and cause.type in REFUSALS:
        return ApplicationError(cause.message, type=cause.type)
    return ApplicationError(f"{what} could not be recorded", type="NotRecorded")
