"""Webhook signatures made by fleet/ops/webhook_sign.py, checked by the `standardwebhooks` package's
own verifier (the reference implementation receivers use)."""

import json
import time

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from fleet.ops import webhook_sign
from fleet.ops.webhook_sign import SecretError


def test_our_signature_verifies_with_standard_webhooks() -> None:
    secret = webhook_sign.new_secret()
    body = json.dumps({"type": "alert.raised", "data": {"ward": "Phường 1"}}, ensure_ascii=False).encode()
    headers = webhook_sign.headers(secret, "ntf_42", int(time.time()), body)
    assert set(headers) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert headers["webhook-signature"].startswith("v1,")
    assert Webhook(secret).verify(body, headers) == {"type": "alert.raised", "data": {"ward": "Phường 1"}}

    with pytest.raises(WebhookVerificationError):  # another secret, a changed body, another id: refused
        Webhook(webhook_sign.new_secret()).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body.replace(b"raised", b"resolved"), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body, {**headers, "webhook-id": "ntf_43"})


def test_the_reference_signs_as_we_do() -> None:
    from datetime import UTC, datetime
    secret = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # 24 bytes of base64, as in the specification
    at = 1_700_000_000
    ours = webhook_sign.signature(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", at, b'{"test": 2432232314}')
    theirs = Webhook(secret).sign("msg_p5jXN8AQM9LWM0D4loKWxJek", datetime.fromtimestamp(at, UTC),
                                  '{"test": 2432232314}')
    assert ours == theirs


@pytest.mark.parametrize("bad", ["MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_not base64!", "whsec_c2hvcnQ=", "whsec_"])
def test_secrets_not_in_the_format_are_refused(bad: str) -> None:
    with pytest.raises(SecretError) as caught:
        webhook_sign.secret_key(bad)
    assert bad.removeprefix("whsec_") not in str(caught.value) or not bad.removeprefix("whsec_")
