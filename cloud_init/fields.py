"""Strict checks for each user-data value: a whitelist pattern or a range, nothing looser.

Every value ends up in YAML, in a shell script or in a systemd environment file, so
each check admits only characters that mean nothing special to any of the three
(no whitespace, quotes, ``$``, backticks, ``;``, parentheses, backslashes). The
messages never repeat the value: it may be a secret or an injection attempt.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import SplitResult, urlsplit

MAX_URL_LENGTH = 2048
MAX_TOKEN_LENGTH = 4096

# A DNS label, lowercase: safe in a URL path, a hostname and a shell word.
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
# A JWT: three base64url parts.
_JWT = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
# URL characters we accept; no '@' (credentials), '?', '#', quotes, '$', ';', spaces.
_URL_CHARS = re.compile(r"[A-Za-z0-9._~:/%\[\]-]+")
_VERSION = r"[0-9]+(?:\.[0-9]+){0,3}(?:(?:a|b|rc)[0-9]+)?(?:\.post[0-9]+)?(?:\.dev[0-9]+)?"
_PINNED = re.compile(r"vm-agent==" + _VERSION)
_WHEEL_NAME = re.compile(r"vm_agent-" + _VERSION + r"-py3-none-any\.whl")
_SHA256_FRAGMENT = re.compile(r"sha256=[0-9a-f]{64}")
_DIGITS = re.compile(r"[0-9]{1,9}")
# Well-known credential prefixes (GitHub, OpenAI/Anthropic, GitLab, Slack, AWS, Google,
# DigitalOcean, JWTs), case-sensitive so that e.g. "asia-east1" stays a fine hostname:
# a field other than the callback token holding one would put a credential on the VM.
_SECRET_MARKERS = re.compile(
    r"(?<![A-Za-z0-9])(?:gh[pousr]_|github_pat_|sk-|glpat-|xox[abposr]-|AKIA|ASIA|AIza"
    r"|dop_v1_|eyJ)"
)
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})


def refuse_secret_looking(value: str) -> str:
    if _SECRET_MARKERS.search(value):
        raise ValueError("looks like a credential; only the callback token may go on a VM")
    return value


def check_label(value: str, what: str) -> str:
    if not _LABEL.fullmatch(value):
        raise ValueError(
            f"{what} must be 1-63 lowercase letters, digits or '-', "
            "starting and ending with a letter or digit"
        )
    return refuse_secret_looking(value)


def is_loopback_host(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(value: str) -> SplitResult:
    """An https URL (http only to loopback, for local dev) with no credentials or query."""
    if len(value) > MAX_URL_LENGTH:
        raise ValueError(f"longer than {MAX_URL_LENGTH} characters")
    if "@" in value:
        raise ValueError("must not carry credentials")
    if "?" in value:
        raise ValueError("must not have a query string")
    if not _URL_CHARS.fullmatch(value):
        raise ValueError("may contain only letters, digits and . _ ~ : / % [ ] -")
    parts = urlsplit(value)
    host = parts.hostname or ""
    if not host:
        raise ValueError("must name a host")
    try:
        parts.port  # noqa: B018  (urlsplit checks the port only when asked)
    except ValueError:
        raise ValueError("has an invalid port") from None
    if parts.scheme == "http":
        if not is_loopback_host(host):
            raise ValueError("must use https (http is accepted for loopback only)")
    elif parts.scheme != "https":
        raise ValueError("must use https")
    refuse_secret_looking(value)
    return parts


def check_token(value: str) -> str:
    if len(value) > MAX_TOKEN_LENGTH:
        raise ValueError(f"longer than {MAX_TOKEN_LENGTH} characters")
    if not _JWT.fullmatch(value):
        raise ValueError("must be a JWT (three base64url parts joined by '.')")
    return value


def check_agent_package(value: str, control_plane_url: str | None) -> str:
    """``vm-agent==X.Y.Z``, or a vm_agent wheel URL on the control plane's own host."""
    if _PINNED.fullmatch(value):
        return value
    if not value.startswith(("https://", "http://")):
        raise ValueError("must be vm-agent==X.Y.Z or a wheel URL on the control plane")
    url, sep, fragment = value.partition("#")
    if sep and not _SHA256_FRAGMENT.fullmatch(fragment):
        raise ValueError("a wheel URL may carry only a #sha256=<64 hex digits> fragment")
    parts = check_url(url)
    if not _WHEEL_NAME.fullmatch(parts.path.rsplit("/", 1)[-1]):
        raise ValueError("a wheel URL must end in vm_agent-X.Y.Z-py3-none-any.whl")
    if control_plane_url is not None:
        plane = urlsplit(control_plane_url)
        if (parts.hostname, parts.port) != (plane.hostname, plane.port):
            raise ValueError("a wheel URL must be on the control plane's host")
    return value


def parse_whole_number(text: str, low: int, high: int) -> int:
    """Digits only: no sign, no spaces, no trailing newline, then a range check."""
    if not _DIGITS.fullmatch(text):
        raise ValueError(f"must be a whole number from {low} to {high}")
    value = int(text)
    if not low <= value <= high:
        raise ValueError(f"must be a whole number from {low} to {high}")
    return value
