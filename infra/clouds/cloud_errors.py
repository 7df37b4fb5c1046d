"""What the readers of the clouds' APIs (monitoring.py, power.py) share: the worker's credentials and
clients, checks on what they are given, and their SDKs' errors turned into ProviderFailure.

A failure names the reader's step ("metrics", "power") and the service as people read it ("CloudWatch",
"EC2", "Cloud Monitoring", "Azure Compute", ...), and is an outage (throttling, 5xx, no connection) or bad
configuration (credentials, permissions, something not found), whose hint names what the worker's identity
needs. The SDKs are imported only when called, so importing a reader loads none of them.
"""

import os
import re
from collections.abc import Collection
from datetime import UTC, datetime
from typing import Any

from core.providers import FailureClass, ProviderFailure

AS_IT_STANDS = "the request was refused as it stands"


def window(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """[start, end) in UTC; a naive moment is refused, as it could be in any zone."""
    if start.utcoffset() is None or end.utcoffset() is None:
        raise ValueError("start and end must be aware datetimes (UTC)")
    return start.astimezone(UTC), end.astimezone(UTC)


def short(error: object, limit: int = 400) -> str:
    """An SDK's error as one line short enough for a person (the SDKs put no credentials in them)."""
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------------------------------------- AWS

AWS_THROTTLED = {"Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequestsException"}
AWS_BAD_CREDENTIALS = {
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "ExpiredToken",
    "ExpiredTokenException",
    "SignatureDoesNotMatch",
    "InvalidAccessKeyId",
    "AuthFailure",
}


def aws_client(service: str, region: str) -> Any:
    """A boto3 client of `service` ("cloudwatch", "ec2") in `region`, from the worker's AWS environment,
    retrying throttling and 5xx a few times; the caller closes it."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        service,
        region_name=region,
        config=Config(retries={"mode": "standard", "max_attempts": 4}, connect_timeout=10, read_timeout=60),
    )


def aws_failure(
    error: Exception, *, step: str, service: str, region: str, permission: str, outage_codes: Collection[str] = ()
) -> ProviderFailure:
    """What boto3's `error` (a ClientError, or any BotoCoreError) means, asking `service` in `region`:
    `permission` is what a refused identity is told to get, `outage_codes` the service's own codes for
    its faults (besides throttling and 5xx)."""
    from botocore.exceptions import ClientError, HTTPClientError, NoCredentialsError
    from botocore.exceptions import ConnectionError as AwsConnectionError

    if isinstance(error, ClientError):
        return _aws_refusal(error, step, service, permission, outage_codes)
    if isinstance(error, NoCredentialsError):
        return ProviderFailure(
            step,
            f"{service} cannot be asked: the worker has no AWS credentials (set AWS_PROFILE or "
            "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or give it an instance role)",
            FailureClass.CONFIGURATION,
        )
    if isinstance(error, AwsConnectionError | HTTPClientError):
        return ProviderFailure(step, f"{service} in {region} could not be reached: {short(error)}", FailureClass.OUTAGE)
    return ProviderFailure(step, f"{service} cannot be asked: {short(error)}", FailureClass.CONFIGURATION)


def _aws_refusal(
    error: Any, step: str, service: str, permission: str, outage_codes: Collection[str]
) -> ProviderFailure:
    details = error.response.get("Error", {})
    code = details.get("Code", "Unknown")
    said = f"{code}: {details.get('Message', '')}".rstrip(": ")
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
    if code in AWS_THROTTLED or status == 429 or status >= 500 or code in outage_codes:
        return ProviderFailure(step, f"{service} is unavailable or throttling: {short(said)}", FailureClass.OUTAGE)
    if code in AWS_BAD_CREDENTIALS:
        hint = "check the worker's AWS credentials (AWS_PROFILE, AWS_ACCESS_KEY_ID, or its instance role)"
    elif code.startswith("AccessDenied") or code == "UnauthorizedOperation" or status == 403:
        hint = f"give the worker's AWS identity {permission}"
    else:
        hint = AS_IT_STANDS
    return ProviderFailure(step, f"{service} refused: {short(said)}: {hint}", FailureClass.CONFIGURATION)


# ---------------------------------------------------------------------------------------------- GCP

GCP_PROJECT_VARIABLES = ("GOOGLE_PROJECT", "GOOGLE_CLOUD_PROJECT", "CLOUDSDK_CORE_PROJECT")


def gcp_default_project(step: str, reading: str) -> str:
    """The project to read `reading` ("metrics", "instances") from when the config names none:
    GOOGLE_PROJECT (as for Pulumi) or its kin, else the SDK's default. May raise google.auth's errors,
    for gcp_failure."""
    for variable in GCP_PROJECT_VARIABLES:
        if os.environ.get(variable):
            return os.environ[variable]
    import google.auth

    _, project = google.auth.default()
    if not project:
        raise ProviderFailure(
            step,
            f"no GCP project to read {reading} from: set `project` in the provider's config, or GOOGLE_PROJECT "
            "on the worker",
            FailureClass.CONFIGURATION,
        )
    return project


def gcp_failure(error: Exception, *, step: str, service: str, permission: str) -> ProviderFailure:
    """What a Google client's `error` means, asking `service`: one of google.api_core's (a
    GoogleAPICallError or RetryError) or google.auth's; anything else (a REST client's requests error) is
    Google out of reach. `permission` is what a refused service account is told to get."""
    import google.auth.exceptions as auth_errors
    from google.api_core import exceptions as api_errors

    if isinstance(error, api_errors.TooManyRequests | api_errors.ServerError | api_errors.RetryError):
        return ProviderFailure(step, f"{service} is unavailable or throttling: {short(error)}", FailureClass.OUTAGE)
    if isinstance(error, api_errors.GoogleAPICallError):
        # gRPC's Unauthenticated and PermissionDenied are kinds of these HTTP ones.
        if isinstance(error, api_errors.Unauthorized):
            hint = "check the worker's Google credentials (GOOGLE_APPLICATION_CREDENTIALS or workload identity)"
        elif isinstance(error, api_errors.Forbidden | api_errors.NotFound):
            hint = f"give the worker's service account {permission}"
        else:
            hint = AS_IT_STANDS
        return ProviderFailure(step, f"{service} refused: {short(error)}: {hint}", FailureClass.CONFIGURATION)
    if isinstance(error, auth_errors.DefaultCredentialsError):
        return ProviderFailure(
            step,
            f"{service} cannot be asked: the worker has no Google credentials (set "
            "GOOGLE_APPLICATION_CREDENTIALS, or use workload identity)",
            FailureClass.CONFIGURATION,
        )
    if isinstance(error, auth_errors.GoogleAuthError) and not isinstance(error, auth_errors.TransportError):
        return ProviderFailure(
            step, f"Google refused the worker's credentials: {short(error)}", FailureClass.CONFIGURATION
        )
    return ProviderFailure(step, f"Google could not be reached: {short(error)}", FailureClass.OUTAGE)


# -------------------------------------------------------------------------------------------- Azure

AZURE_SCOPE = re.compile(r"/subscriptions/(?P<subscription>[^/]+)/resourceGroups/(?P<group>[^/]+)/", re.I)


def azure_scope(outputs: dict, step: str) -> tuple[str, str]:
    """The subscription and resource group of the cluster, from its outputs' `storageId` (the shared
    disk's ARM id)."""
    scope = AZURE_SCOPE.match(str(outputs.get("storageId") or ""))
    if scope is None:
        raise ProviderFailure(
            step,
            "the cluster's outputs have no Azure storageId (/subscriptions/.../resourceGroups/...) to find its "
            "VMs from: refresh or re-provision the cluster",
        )
    return scope["subscription"], scope["group"]


def azure_credential() -> Any:
    """The worker's Azure credential: DefaultAzureCredential, or a service principal from Pulumi's
    ARM_TENANT_ID, ARM_CLIENT_ID and ARM_CLIENT_SECRET when AZURE_CLIENT_ID is not set; the caller closes it."""
    from azure.identity import ClientSecretCredential, DefaultAzureCredential

    env = os.environ
    pulumi_principal = ("ARM_TENANT_ID", "ARM_CLIENT_ID", "ARM_CLIENT_SECRET")
    if not env.get("AZURE_CLIENT_ID") and all(env.get(name) for name in pulumi_principal):
        return ClientSecretCredential(*(env[name] for name in pulumi_principal))
    return DefaultAzureCredential()


def azure_failure(error: Exception, *, step: str, service: str, permission: str) -> ProviderFailure:
    """What azure-core's `error` means, asking `service`: an HttpResponseError (ClientAuthenticationError
    among them), else a ServiceRequestError or ServiceResponseError, Azure out of reach. `permission` is
    what a refused identity is told to get."""
    from azure.core.exceptions import ClientAuthenticationError, HttpResponseError

    if isinstance(error, ClientAuthenticationError):
        return ProviderFailure(
            step,
            f"Azure refused the worker's credentials: {short(error)}: set AZURE_CLIENT_ID, AZURE_TENANT_ID and "
            "AZURE_CLIENT_SECRET (or Pulumi's ARM_* ones) on the worker, or give it a managed identity",
            FailureClass.CONFIGURATION,
        )
    if not isinstance(error, HttpResponseError):
        return ProviderFailure(step, f"Azure could not be reached: {short(error)}", FailureClass.OUTAGE)
    code = error.error.code if error.error is not None and error.error.code else (error.reason or "error")
    status = error.status_code or 0
    said = f"{code}: {error.error.message if error.error is not None else error.message}"
    if status == 429 or status >= 500:
        return ProviderFailure(step, f"{service} is unavailable or throttling: {short(said)}", FailureClass.OUTAGE)
    if status == 403:
        hint = f"give the worker's identity {permission}"
    elif status == 404:
        hint = "the cluster's resources are not where its outputs say: refresh the cluster"
    else:
        hint = AS_IT_STANDS
    return ProviderFailure(step, f"{service} refused: {short(said)}: {hint}", FailureClass.CONFIGURATION)
