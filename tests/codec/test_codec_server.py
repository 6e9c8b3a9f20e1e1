"""The codec server over ASGI: Temporal's remote codec protocol, CORS for the UI, the token."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from starlette.applications import Starlette

from codec import EncryptionCodec, EncryptionSettingsError, Keyring
from codec.server import codec_app, create_app
from core.settings import Settings

UI = "http://localhost:8233"
TOKEN = "operator-token-1"
REASON = "kettle arrived cracked, order 7Q-TEAPOT"


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def json_payload(value: Any) -> dict[str, Any]:
    """One payload in the proto-JSON form the UI sends: bytes as base64."""
    return {
        "metadata": {"encoding": b64(b"json/plain")},
        "data": b64(json.dumps(value).encode()),
    }


def settings(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)


@pytest.fixture
def codec() -> EncryptionCodec:
    return EncryptionCodec(Keyring({"k1": os.urandom(32)}, "k1"))


@pytest.fixture
async def http(codec: EncryptionCodec) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(codec, ui_origins=[UI])
    async with client_for(app) as client:
        yield client


def client_for(app: Starlette) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://codec")


async def test_encode_then_decode_round_trip(http: httpx.AsyncClient) -> None:
    plain = {"payloads": [json_payload({"reason": REASON}), json_payload(12345)]}
    encoded = await http.post("/encode", json=plain, headers={"X-Namespace": "default"})
    assert encoded.status_code == 200
    assert encoded.headers["content-type"] == "application/json"
    for payload in encoded.json()["payloads"]:
        assert base64.b64decode(payload["metadata"]["encoding"]) == b"binary/encrypted"
        assert base64.b64decode(payload["metadata"]["encryption-key-id"]) == b"k1"
        assert REASON.encode() not in base64.b64decode(payload["data"])

    decoded = await http.post("/decode", json=encoded.json(), headers={"X-Namespace": "default"})
    assert decoded.status_code == 200
    assert decoded.json() == plain


async def test_only_the_last_path_segment_counts(http: httpx.AsyncClient) -> None:
    encoded = await http.post("/default/encode", json={"payloads": [json_payload(1)]})
    assert encoded.status_code == 200
    decoded = await http.post("/codec/default/decode/", json=encoded.json())
    assert decoded.json() == {"payloads": [json_payload(1)]}
    assert (await http.post("/default/other", json={"payloads": []})).status_code == 404


async def test_plain_payloads_pass_through_decode(http: httpx.AsyncClient) -> None:
    body = {"payloads": [json_payload("written before encryption was on")]}
    answer = await http.post("/decode", json=body)
    assert answer.status_code == 200
    assert answer.json() == body


async def test_no_payloads_answer_an_empty_list(http: httpx.AsyncClient) -> None:
    for action in ("/encode", "/decode"):
        answer = await http.post(action, json={"payloads": []})
        assert answer.json() == {"payloads": []}


async def test_bad_bodies_are_400(http: httpx.AsyncClient) -> None:
    assert (await http.post("/decode", content=b"not json")).status_code == 400
    assert (await http.post("/decode", json={"payloads": [{"data": 5}]})).status_code == 400
    assert (await http.post("/decode", content=b"\xff\xfe")).status_code == 400


async def test_an_undecryptable_payload_is_400_naming_the_key_id(
    http: httpx.AsyncClient,
) -> None:
    foreign = EncryptionCodec(Keyring({"elsewhere": os.urandom(32)}, "elsewhere"))
    alien = create_app(foreign)
    async with client_for(alien) as other:
        encoded = (await other.post("/encode", json={"payloads": [json_payload(1)]})).json()
    answer = await http.post("/decode", json=encoded)
    assert answer.status_code == 400
    assert "'elsewhere'" in answer.json()["error"]


async def test_cors_preflight_allows_the_ui(http: httpx.AsyncClient) -> None:
    answer = await http.options(
        "/decode",
        headers={
            "Origin": UI,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "x-namespace,content-type,authorization",
        },
    )
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == UI
    assert "POST" in answer.headers["access-control-allow-methods"]
    allowed = {h.strip().lower() for h in answer.headers["access-control-allow-headers"].split(",")}
    assert {"x-namespace", "content-type", "authorization"} <= allowed


async def test_cors_answers_carry_the_origin_and_other_origins_are_refused(
    http: httpx.AsyncClient,
) -> None:
    answer = await http.post("/encode", json={"payloads": []}, headers={"Origin": UI})
    assert answer.headers["access-control-allow-origin"] == UI

    refused = await http.options(
        "/decode",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert refused.status_code == 400
    assert "access-control-allow-origin" not in refused.headers


async def test_the_token_is_required_when_set(codec: EncryptionCodec) -> None:
    body = {"payloads": [json_payload(1)]}
    async with client_for(create_app(codec, auth_token=TOKEN, ui_origins=[UI])) as http:
        missing = await http.post("/encode", json=body, headers={"Origin": UI})
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"] == "Bearer"
        # The UI can read the refusal: it carries the CORS headers too.
        assert missing.headers["access-control-allow-origin"] == UI
        assert TOKEN not in missing.text

        for wrong in ("Bearer nope", f"Basic {TOKEN}", TOKEN, f"Bearer {TOKEN}x"):
            answer = await http.post("/encode", json=body, headers={"Authorization": wrong})
            assert answer.status_code == 401, wrong

        right = await http.post("/encode", json=body, headers={"Authorization": f"Bearer {TOKEN}"})
        assert right.status_code == 200

        # Browsers never send credentials on a preflight.
        preflight = await http.options(
            "/encode",
            headers={
                "Origin": UI,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type",
            },
        )
        assert preflight.status_code == 200


async def test_codec_app_from_settings() -> None:
    key = b64(os.urandom(32))
    app = codec_app(
        settings(
            refunds_encryption_keys=SecretStr(f"k1:{key}"),
            refunds_encryption_key_id="k1",
            refunds_codec_auth_token=SecretStr(TOKEN),
            refunds_codec_ui_origins="https://temporal.example.com, http://localhost:8233",
        )
    )
    async with client_for(app) as http:
        body = {"payloads": [json_payload(REASON)]}
        assert (await http.post("/encode", json=body)).status_code == 401
        answer = await http.post(
            "/encode",
            json=body,
            headers={"Authorization": f"Bearer {TOKEN}", "Origin": "https://temporal.example.com"},
        )
        assert answer.status_code == 200
        assert answer.headers["access-control-allow-origin"] == "https://temporal.example.com"


def test_codec_app_needs_keys() -> None:
    with pytest.raises(EncryptionSettingsError, match="REFUNDS_ENCRYPTION_KEYS"):
        codec_app(settings())
