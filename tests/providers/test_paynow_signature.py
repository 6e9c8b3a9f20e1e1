"""Paynow v3 signatures: the published test vectors, and the httpx.Auth signing what it sends."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import httpx
import pytest
from pydantic import SecretStr

from providers.paynow import PaynowSignatureAuth, sign_request, verify_notification
from providers.paynow.signature import signature_message

API_KEY = "97a55694-5478-43b5-b406-fb49ebfdd2b5"
SIGNATURE_KEY = "b305b996-bca5-4404-a0b7-2ccea3d2b64b"


def _hmac_b64(key: str, message: str) -> str:
    mac = hmac.new(key.encode(), message.encode(), hashlib.sha256)
    return base64.b64encode(mac.digest()).decode()


@pytest.mark.parametrize(
    ("idempotency_key", "body", "expected"),
    [
        (
            "d243fdb3-c287-484a-bb9c-58536f2794c1",
            "",
            "fXwLZRwo0WiGll90PPl5oULX9VKA0gpFA/3+E+NRp5E=",
        ),
        (
            "6228e8f1-4fd9-40bc-9660-37b03c968590",
            "",
            "Aqy2xIQAZghJX4jdzeMZa7I/3WcI2saIAt0qzLoZiMU=",
        ),
        (
            "idempotencyKey123",
            '{"amount":100,"reason":null}',
            "fvRoXrVZSaahWxVP8yfq8w2thUQSJuwzsesszd93vpA=",
        ),
    ],
)
def test_request_signature_vectors(idempotency_key: str, body: str, expected: str) -> None:
    no_parameters: tuple[dict[str, list[str]] | None, ...] = (None, {})
    for parameters in no_parameters:
        signature = sign_request(
            api_key=API_KEY,
            idempotency_key=idempotency_key,
            signature_key=SIGNATURE_KEY,
            body=body,
            parameters=parameters,
        )
        assert signature == expected
    # The same with the key as a SecretStr and the body as bytes.
    assert (
        sign_request(
            api_key=API_KEY,
            idempotency_key=idempotency_key,
            signature_key=SecretStr(SIGNATURE_KEY),
            body=body.encode(),
        )
        == expected
    )


def test_empty_parameters_are_an_object_never_a_list() -> None:
    key = "d243fdb3-c287-484a-bb9c-58536f2794c1"
    wrong_message = (
        f'{{"headers":{{"Api-Key":"{API_KEY}","Idempotency-Key":"{key}"}},'
        '"parameters":[],"body":""}'
    )
    # The counter-example from the provider sheet: "[]" signs to a different value.
    assert _hmac_b64(SIGNATURE_KEY, wrong_message) == (
        "xSNeLriZGWGDTPYKdQ3C9+M0qddnyMmRKIQBwumPfro="
    )
    message = signature_message(api_key=API_KEY, idempotency_key=key)
    assert message == wrong_message.replace('"parameters":[]', '"parameters":{}')
    assert (
        sign_request(api_key=API_KEY, idempotency_key=key, signature_key=SIGNATURE_KEY)
        != "xSNeLriZGWGDTPYKdQ3C9+M0qddnyMmRKIQBwumPfro="
    )


def test_message_sorts_parameters_and_keeps_slashes_and_unicode() -> None:
    message = signature_message(
        api_key="k",
        idempotency_key="i",
        body='{"note":"a/b zł"}',
        parameters={"b": ["2"], "a": ["1", "0"]},
    )
    assert message == (
        '{"headers":{"Api-Key":"k","Idempotency-Key":"i"},'
        '"parameters":{"a":["1","0"],"b":["2"]},'
        '"body":"{\\"note\\":\\"a/b zł\\"}"}'
    )


NOTIFICATION_BODY = (
    b'{\n  "paymentId": "NOLV-8F9-08K-WGD",\n  "status": "CONFIRMED",\n'
    b'  "modifiedAt": "2018-12-12T13:24:52"\n}'
)
NOTIFICATION_SIGNATURE = "Aq/VmN15rtjVbuy9F7Yw+Ym76H+VZjVSuHGpg4dwitY="


def test_notification_vector_verifies() -> None:
    assert not NOTIFICATION_BODY.endswith(b"\n")
    assert verify_notification(NOTIFICATION_BODY, NOTIFICATION_SIGNATURE, "s3ecret-k3y")
    assert verify_notification(NOTIFICATION_BODY, NOTIFICATION_SIGNATURE, SecretStr("s3ecret-k3y"))


@pytest.mark.parametrize(
    ("body", "signature", "key"),
    [
        (NOTIFICATION_BODY + b"\n", NOTIFICATION_SIGNATURE, "s3ecret-k3y"),
        (
            NOTIFICATION_BODY.replace(b"CONFIRMED", b"REJECTED"),
            NOTIFICATION_SIGNATURE,
            "s3ecret-k3y",
        ),
        (NOTIFICATION_BODY, NOTIFICATION_SIGNATURE, "another-key"),
        (NOTIFICATION_BODY, "", "s3ecret-k3y"),
        (NOTIFICATION_BODY, "Aq/VmN15rtjVbuy9F7Yw+Ym76H+VZjVSuHGpg4dwitZ=", "s3ecret-k3y"),
        # Re-serialized compactly, the same JSON no longer verifies: only raw bytes count.
        (
            json.dumps(json.loads(NOTIFICATION_BODY), separators=(",", ":")).encode(),
            NOTIFICATION_SIGNATURE,
            "s3ecret-k3y",
        ),
    ],
)
def test_notification_rejects_anything_else(body: bytes, signature: str, key: str) -> None:
    assert not verify_notification(body, signature, key)


def _capture(seen: list[httpx.Request]) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={})

    return httpx.MockTransport(handler)


def _auth() -> PaynowSignatureAuth:
    return PaynowSignatureAuth(api_key=SecretStr(API_KEY), signature_key=SecretStr(SIGNATURE_KEY))


async def test_auth_signs_exactly_what_is_sent() -> None:
    seen: list[httpx.Request] = []
    body = '{"amount":1234,"reason":"RMA","note":"a/b zł"}'.encode()
    async with httpx.AsyncClient(transport=_capture(seen), base_url="https://x/paynow") as client:
        await client.post(
            "v3/payments/ABCD-123-456-789/refunds",
            content=body,
            params=[("z", "last"), ("a", "1"), ("a", "0")],
            headers={"Idempotency-Key": "key-1"},
            auth=_auth(),
        )
    (sent,) = seen
    assert sent.headers["Api-Key"] == API_KEY
    assert sent.content == body
    # Recompute independently from the bytes and URL that went out.
    expected_message = (
        f'{{"headers":{{"Api-Key":"{API_KEY}","Idempotency-Key":"key-1"}},'
        '"parameters":{"a":["1","0"],"z":["last"]},'
        '"body":"{\\"amount\\":1234,\\"reason\\":\\"RMA\\",\\"note\\":\\"a/b zł\\"}"}'
    )
    assert sent.headers["Signature"] == _hmac_b64(SIGNATURE_KEY, expected_message)


async def test_auth_signs_an_empty_body_as_empty_string() -> None:
    seen: list[httpx.Request] = []
    async with httpx.AsyncClient(transport=_capture(seen), base_url="https://x") as client:
        await client.get(
            "/v3/refunds/R123-456-789-ABC/status",
            headers={"Idempotency-Key": "d243fdb3-c287-484a-bb9c-58536f2794c1"},
            auth=_auth(),
        )
    assert seen[0].headers["Signature"] == "fXwLZRwo0WiGll90PPl5oULX9VKA0gpFA/3+E+NRp5E="


async def test_auth_refuses_to_sign_without_idempotency_key() -> None:
    async with httpx.AsyncClient(transport=_capture([]), base_url="https://x") as client:
        with pytest.raises(ValueError, match="Idempotency-Key"):
            await client.get("/v3/refunds/R/status", auth=_auth())


def test_auth_repr_holds_no_key() -> None:
    text = repr(_auth())
    assert API_KEY not in text
    assert SIGNATURE_KEY not in text
