"""What the daemon trusts for the control plane: the CA file alone when one is set."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from tests.tlsca import make_tls_files
from vm_agent.control_link.trust import TrustError, control_plane_verify


def test_without_a_ca_file_the_system_trust_is_used() -> None:
    assert control_plane_verify(None) is True


def test_a_ca_file_is_the_only_trust(tmp_path: Path) -> None:
    tls = make_tls_files(tmp_path)
    context = control_plane_verify(tls.ca_file)
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname
    [only] = context.get_ca_certs()
    assert only["subject"] == ((("commonName", "vm-agent test CA"),),)


@pytest.mark.parametrize(
    ("content", "says"), [(None, "does not exist"), ("not a certificate\n", "not a usable PEM CA")]
)
def test_an_unusable_ca_file_is_one_line_for_a_person(
    tmp_path: Path, content: str | None, says: str
) -> None:
    path = tmp_path / "ca.pem"
    if content is not None:
        path.write_text(content)
    with pytest.raises(TrustError, match=says) as caught:
        control_plane_verify(path)
    assert "VM_AGENT_CONTROL_PLANE_CA_FILE" in str(caught.value)
    assert "\n" not in str(caught.value)
