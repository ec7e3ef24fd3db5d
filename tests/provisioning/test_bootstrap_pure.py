"""The daemon's first-start decision and the checks on what the exchange hands back."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from control_plane.identity.node_ca import NodeCA, request_public_key
from vm_agent.control_link.bootstrap import (
    BootstrapRefused,
    StartPlan,
    certificate_request,
    load_or_make_key,
    parse_answer,
    plan_start,
)


@pytest.mark.parametrize(
    ("control_plane", "callback", "bootstrap", "plan"),
    [
        (False, False, False, StartPlan.NO_CONTROL_PLANE),
        (False, False, True, StartPlan.NO_CONTROL_PLANE),
        (True, False, True, StartPlan.EXCHANGE),
        (True, True, False, StartPlan.USE_CALLBACK_TOKEN),
        (True, True, True, StartPlan.USE_CALLBACK_TOKEN),  # the bootstrap token is spent
        (True, False, False, StartPlan.USE_CALLBACK_TOKEN),  # which then says what is missing
    ],
)
def test_plan_start(control_plane: bool, callback: bool, bootstrap: bool, plan: StartPlan) -> None:
    assert (
        plan_start(control_plane=control_plane, callback_token=callback, bootstrap_token=bootstrap)
        is plan
    )


def test_the_key_is_made_0600_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "node-key.pem"
    key = load_or_make_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = load_or_make_key(path)
    assert again.private_numbers() == key.private_numbers()
    path.chmod(0o640)
    with pytest.raises(BootstrapRefused, match="only its owner"):
        load_or_make_key(path)


def signed_answer(key: ec.EllipticCurvePrivateKey) -> dict[str, str]:
    ca = NodeCA.generate("nodes.test.internal", 1_800_000_000.0)
    public = request_public_key(certificate_request(key, "node-1"))
    cert = ca.sign(public, "node-1", 1_800_000_000.0, 3600)
    return {
        "callback_token": "a.b.c",
        "certificate": cert.pem,
        "ca_certificate": ca.certificate_pem(),
        "dns_name": ca.dns_name("node-1"),
    }


def test_an_answer_for_our_key_is_taken() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    answer = parse_answer(signed_answer(key), key)
    assert answer.callback_token == "a.b.c"
    assert answer.dns_name == "node-1.nodes.test.internal"


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"callback_token": ""}, "no callback token"),
        ({"callback_token": "a b"}, "no callback token"),
        ({"callback_token": 7}, "no callback token"),
        ({"certificate": None}, "no certificate"),
        (
            {"certificate": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"},
            "not PEM",
        ),
    ],
)
def test_a_broken_answer_is_refused(change: dict[str, object], says: str) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(BootstrapRefused, match=says):
        parse_answer({**signed_answer(key), **change}, key)


def test_a_certificate_for_another_key_is_refused() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    other = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(BootstrapRefused, match="not for this node's key"):
        parse_answer(signed_answer(other), key)
    with pytest.raises(BootstrapRefused, match="not a JSON object"):
        parse_answer([], key)
