"""What the stack runner lets out of the worker: the environment Pulumi runs with, and what a failed run tells tenants.

The environment. The Pulumi CLI, and the provider plugins it downloads and starts, get the worker's
environment less the platform's own variables (database URL, credential keys, passphrase, telemetry,
...). The platform names what it keeps back rather than what it lets through: the clouds' SDKs read
many variables (credential chains, workload identity, proxies, CA bundles) and keep adding them, and
an allow-list that misses one breaks sign-in in ways that are hard to trace. The platform's own
variables are few and share a handful of prefixes.

A failed run. The failure message reaches the tenant (the cluster's status reason, the step log, the
workflow history, the `cluster.failed` webhook), so it carries only the run's error lines, with what
identifies the worker's cloud accounts, identities, network and files replaced by placeholders. The
whole output goes to the worker's log.
"""

import os
import re
import sys
import threading
from pathlib import Path

import pulumi.automation as auto

from core.providers import PLATFORM_VARIABLES

MESSAGE_LIMIT = 400


# The CLI Pulumi's own PulumiCommand starts: a launcher that starts the real one without the
# platform's variables, with the real one's folder (its plugins) first on the PATH.
LAUNCHER = """#!{python}
# Made by hpcinfra (infra/clouds/exposure.py): the Pulumi CLI at {cli},
# without the platform's own variables.
import os, re, sys

cli = {cli!r}
env = {{name: value for name, value in os.environ.items() if not re.match({pattern!r}, name)}}
env["PATH"] = os.pathsep.join([os.path.dirname(cli), env.get("PATH", "")])
os.execve(cli, [cli, *sys.argv[1:]], env)
"""


def cloud_pulumi_command(cli: str, folder: Path) -> auto.PulumiCommand:
    """Pulumi's command for the CLI at `cli`, started through a launcher kept in `folder`/bin that leaves
    the platform's variables out. Pulumi starts every command with the whole of `os.environ` under the
    workspace's variables, so leaving a variable out of those keeps it from nobody; the launcher is
    between Pulumi and the CLI, and so also between the worker and every plugin the CLI starts."""
    launcher = folder / "bin" / "pulumi"
    text = LAUNCHER.format(python=sys.executable, cli=os.path.abspath(cli), pattern=PLATFORM_VARIABLES.pattern)
    if not launcher.exists() or launcher.read_text() != text:
        launcher.parent.mkdir(parents=True, exist_ok=True)
        # Written aside, then renamed: no run starts a half-written one, nor do two writers meet.
        made = launcher.with_name(f".pulumi-{os.getpid()}-{threading.get_ident()}")
        made.write_text(text)
        made.chmod(0o755)
        made.replace(launcher)
    return auto.PulumiCommand(root=str(folder), skip_version_check=True)


# What identifies the worker's accounts, identities, network and files; the more specific first
# (a URL holds paths and addresses, an ARN an account id, an Azure resource's path its subscription's id).
PLACEHOLDERS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"(Encoded authorization failure message:)\s*[\w+/=-]+"), r"\1 <encoded>"),
    (re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s\"'`<>]+", re.I), "<url>"),
    (re.compile(r"\barn:aws[\w-]*:[^\s\"'`,;]+"), "<arn>"),
    (re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"), "<access-key>"),
    (re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,}\b"), "<principal>"),  # e.g. a service account
    (re.compile(r"\bprojects/[\w.:-]+"), "projects/<project>"),
    (re.compile(r"(?<![\w.:/<>-])(?:~|\.{1,2})?/[\w.@%+~-]+(?:/[\w.@%+~*-]*)*"), "<path>"),
    (re.compile(r"\b[A-Za-z]:\\[^\s\"'`:;,]+"), "<path>"),
    (re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I), "<id>"),
    (re.compile(r"\blookup [\w-]+(?:\.[\w-]+)+"), "lookup <address>"),  # a host name
    (re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}(?::\d{1,5})?\b"), "<address>"),
    (re.compile(r"(?<![\w:])(?=[0-9A-Fa-f:]*::)[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?![\w:])"), "<address>"),
    (re.compile(r"(?<!\d)\d{12}(?!\d)"), "<account>"),
    # Anything long enough, and mixed enough, to be a token, a key or an encoded blob.
    (re.compile(r"(?=[\w+/=-]*\d)(?=[\w+/=-]*[A-Z])(?=[\w+/=-]*[a-z])[\w+/=-]{40,}"), "<encoded>"),
]
# What says nothing to a tenant: where in a provider's Go source the error was raised, the terraform
# bridge's name for itself, and Pulumi's own summary of errors it has already printed.
NOISE = re.compile(r"\b[\w./-]+\.go:\d+:\s*|\bsdk\.helper_schema:\s*|:\s*provider=[\w-]+@[\w.+-]+$")
SUMMARIES = re.compile(r"(?:update|preview|destroy|refresh) failed|\d+ errors? occurred:?")
ERROR_LINE = re.compile(r"(?:^|\s)error: (.+)")


def failure_message(output: str) -> str:
    """What a failed Pulumi run says went wrong, fit for the tenant to read: its error lines, each once
    and in the order printed, without Pulumi's summary of them or what identifies the worker, at most
    MESSAGE_LIMIT characters."""
    said: list[str] = []
    for line in _error_lines(output):
        line = " ".join(NOISE.sub("", redacted(line)).split())
        if line and line not in said:
            said.append(line)
    telling = [line for line in said if not SUMMARIES.fullmatch(line)] or said
    if not telling:
        code = re.search(r"^\s*code: (-?\d+)", output, re.M)
        return (
            f"the Pulumi CLI failed (exit code {code.group(1) if code else 'unknown'}) without an error line; "
            "the worker's log has its output"
        )
    message = "; ".join(telling)
    return message if len(message) <= MESSAGE_LIMIT else message[: MESSAGE_LIMIT - 3].rstrip() + "..."


def redacted(text: str) -> str:
    """`text` with the worker's accounts, identities, addresses, URLs, paths and tokens as placeholders."""
    for pattern, placeholder in PLACEHOLDERS:
        text = pattern.sub(placeholder, text)
    return text


def _error_lines(output: str) -> list[str]:
    """The `error:` lines, with what belongs to them: the `* ...` list after `N errors occurred:`, and
    a `caused by: ...` line under an error."""
    found: list[str] = []
    listing = following = False
    for raw in output.splitlines():
        line = raw.strip()
        error = ERROR_LINE.search(raw)
        if error is not None:
            found.append(error.group(1).strip())
            listing, following = found[-1].endswith(":"), True
        elif listing and line.startswith("* "):
            found.append(line[2:])
        elif following and line.startswith("caused by: "):
            found[-1] = f"{found[-1]} {line}"
        else:
            listing = following = False
    return found
