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

from cryptography import x509

MAX_URL_LENGTH = 2048
MAX_CA_PEM_LENGTH = 8192

# A DNS label, lowercase: safe in a URL path, a hostname and a shell word.
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
# The control plane's bootstrap tokens: random base64url (no JWT: it is only looked up).
_BOOTSTRAP_TOKEN = re.compile(r"[A-Za-z0-9_-]{32,256}")
_PEM_CERT = re.compile(
    r"-----BEGIN CERTIFICATE-----\n(?:[A-Za-z0-9+/=]{1,76}\n)+-----END CERTIFICATE-----\n"
)
# URL characters we accept; no '@' (credentials), '?', '#', quotes, '$', ';', spaces.
_URL_CHARS = re.compile(r"[A-Za-z0-9._~:/%\[\]-]+")
_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,200}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_DIGITS = re.compile(r"[0-9]{1,9}")
# Well-known credential prefixes (GitHub, OpenAI/Anthropic, GitLab, Slack, AWS, Google,
# DigitalOcean, JWTs), case-sensitive so that e.g. "asia-east1" stays a fine hostname:
# a field other than the bootstrap token holding one would put a credential on the VM.
_SECRET_MARKERS = re.compile(
    r"(?<![A-Za-z0-9])(?:gh[pousr]_|github_pat_|sk-|glpat-|xox[abposr]-|AKIA|ASIA|AIza"
    r"|dop_v1_|eyJ)"
)
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})


def refuse_secret_looking(value: str) -> str:
    if _SECRET_MARKERS.search(value):
        raise ValueError("looks like a credential; only the bootstrap token may go on a VM")
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


def check_bootstrap_token(value: str) -> str:
    if not _BOOTSTRAP_TOKEN.fullmatch(value):
        raise ValueError("must be 32 to 256 base64url characters")
    return value


def check_sha256(value: str) -> str:
    if not _SHA256.fullmatch(value):
        raise ValueError("must be 64 lowercase hex digits")
    return value


def check_artifact_url(value: str, control_plane_url: str | None) -> str:
    """A file on the control plane's own host: its integrity is the sha256 beside it."""
    if "#" in value:
        raise ValueError("must not have a fragment (the sha256 is a parameter of its own)")
    parts = check_url(value)
    if not _FILE_NAME.fullmatch(parts.path.rsplit("/", 1)[-1]):
        raise ValueError("must end in a plain file name")
    if control_plane_url is not None:
        plane = urlsplit(control_plane_url)
        if (parts.scheme, parts.hostname, parts.port) != (plane.scheme, plane.hostname, plane.port):
            raise ValueError("must be on the control plane's scheme, host and port")
    return value


def check_ca_certificate(value: str) -> str:
    """One PEM certificate, and only that (it lands in YAML and the system's trust store)."""
    if len(value) > MAX_CA_PEM_LENGTH:
        raise ValueError(f"longer than {MAX_CA_PEM_LENGTH} characters")
    if not _PEM_CERT.fullmatch(value):
        raise ValueError("must be one PEM certificate (BEGIN/END CERTIFICATE, base64 lines)")
    try:
        x509.load_pem_x509_certificate(value.encode("ascii"))
    except ValueError:
        raise ValueError("is not a parsable certificate") from None
    return value


def parse_whole_number(text: str, low: int, high: int) -> int:
    """Digits only: no sign, no spaces, no trailing newline, then a range check."""
    if not _DIGITS.fullmatch(text):
        raise ValueError(f"must be a whole number from {low} to {high}")
    value = int(text)
    if not low <= value <= high:
        raise ValueError(f"must be a whole number from {low} to {high}")
    return value
