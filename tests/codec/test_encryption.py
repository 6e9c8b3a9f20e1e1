"""EncryptionCodec: round trip, nothing readable at rest, tampering, rotation, settings errors;
and on the real dev server, what `temporal workflow show` reveals of an encrypted refund."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from temporalio import activity
from temporalio.api.common.v1 import Payload
from temporalio.api.failure.v1 import Failure
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DefaultFailureConverterWithEncodedAttributes
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.lane_activities import LaneActivities
from codec import (
    EncryptionCodec,
    EncryptionSettingsError,
    Keyring,
    PayloadDecryptionError,
    UnknownKeyError,
    data_converter,
    encrypting_converter,
)
from codec.encryption import ENCODING, KEY_ID_METADATA, NONCE_BYTES
from codec.server import create_app
from core.models import ProviderName, RefundOptions, RefundRequest, RefundState
from core.settings import Settings
from simulators.serving import serve_in_thread
from starter.client import RefundClient
from starter.connection import ensure_search_attributes
from tests.support.payloads import payloads_in
from tests.workflows.fakes import FakeProvider, final_error
from workflows.payment_lane import RefundLaneWorkflow
from workflows.refund import RefundWorkflow

REASON = "kettle arrived cracked, order 7Q-TEAPOT"
ACCOUNT_ID = "3f0c9a5e-7d21-4b6e-9c4f-2a8e51d0b7c3"
AMOUNT_MINOR = 73_519_842
AMOUNT_MAJOR = "735198.42"
SECRETS = (REASON.encode(), ACCOUNT_ID.encode(), str(AMOUNT_MINOR).encode())
REFUSAL = f"account {ACCOUNT_ID} cannot take a refund of {AMOUNT_MAJOR} GBP"


def new_key() -> bytes:
    return os.urandom(32)


def b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


def settings(keys: str | None, key_id: str | None) -> Settings:
    return Settings(
        _env_file=None,
        refunds_encryption_keys=SecretStr(keys) if keys is not None else None,
        refunds_encryption_key_id=key_id,
    )


def request(key: str = "codec-unit-1", payment_id: str | None = None) -> RefundRequest:
    return RefundRequest(
        idempotency_key=key,
        provider=ProviderName.MEWS,
        payment_id=payment_id or "f6313945-94c1-4e27-b402-031c2a8c989f",
        account_id=ACCOUNT_ID,
        amount_minor=AMOUNT_MINOR,
        currency="GBP",
        reason=REASON,
    )


def plain_payload(value: Any = None) -> Payload:
    return pydantic_data_converter.payload_converter.to_payloads([value or request()])[0]


@pytest.fixture
def codec() -> EncryptionCodec:
    return EncryptionCodec(Keyring({"k1": new_key()}, "k1"))


async def test_round_trip(codec: EncryptionCodec) -> None:
    payload = plain_payload()
    [encrypted] = await codec.encode([payload])
    [decrypted] = await codec.decode([encrypted])
    assert decrypted == payload
    [back] = pydantic_data_converter.payload_converter.from_payloads([decrypted], [RefundRequest])
    assert back == request()


async def test_encrypted_payload_shows_only_the_encoding_and_key_id(
    codec: EncryptionCodec,
) -> None:
    payload = plain_payload()
    assert all(secret in payload.data for secret in SECRETS)
    [encrypted] = await codec.encode([payload])
    assert dict(encrypted.metadata) == {"encoding": ENCODING, KEY_ID_METADATA: b"k1"}
    stored = encrypted.SerializeToString()
    for secret in (*SECRETS, b"json/plain"):
        assert secret not in stored


async def test_each_payload_gets_a_fresh_nonce(codec: EncryptionCodec) -> None:
    payload = plain_payload()
    first, second = await codec.encode([payload, payload])
    assert first.data[:NONCE_BYTES] != second.data[:NONCE_BYTES]
    assert first.data != second.data


@pytest.mark.parametrize("position", [0, NONCE_BYTES, -1])
async def test_altered_ciphertext_is_refused(codec: EncryptionCodec, position: int) -> None:
    [encrypted] = await codec.encode([plain_payload()])
    data = bytearray(encrypted.data)
    data[position] ^= 0x01
    altered = Payload(metadata=encrypted.metadata, data=bytes(data))
    with pytest.raises(PayloadDecryptionError, match="failed authentication"):
        await codec.decode([altered])


async def test_truncated_or_unlabelled_ciphertext_is_refused(codec: EncryptionCodec) -> None:
    [encrypted] = await codec.encode([plain_payload()])
    with pytest.raises(PayloadDecryptionError, match="too short"):
        await codec.decode([Payload(metadata=encrypted.metadata, data=encrypted.data[:20])])
    with pytest.raises(PayloadDecryptionError, match=KEY_ID_METADATA):
        await codec.decode([Payload(metadata={"encoding": ENCODING}, data=encrypted.data)])


async def test_a_key_relabelled_under_another_id_does_not_decrypt() -> None:
    codec = EncryptionCodec(Keyring({"k1": new_key(), "k2": new_key()}, "k1"))
    [encrypted] = await codec.encode([plain_payload()])
    relabelled = Payload(
        metadata={"encoding": ENCODING, KEY_ID_METADATA: b"k2"}, data=encrypted.data
    )
    with pytest.raises(PayloadDecryptionError, match=r"key id 'k2'\) failed authentication"):
        await codec.decode([relabelled])


async def test_plain_payloads_pass_through_decoding(codec: EncryptionCodec) -> None:
    payload = plain_payload()
    assert await codec.decode([payload]) == [payload]


async def test_rotation_keeps_old_payloads_readable_and_encrypts_with_the_new_key() -> None:
    old, new = new_key(), new_key()
    before = EncryptionCodec(Keyring.parse(f"2024-01:{b64(old)}", "2024-01"))
    [written_before] = await before.encode([plain_payload()])

    after = EncryptionCodec(Keyring.parse(f"2024-01:{b64(old)},2025-06:{b64(new)}", "2025-06"))
    assert await after.decode([written_before]) == [plain_payload()]
    [written_after] = await after.encode([plain_payload()])
    assert written_after.metadata[KEY_ID_METADATA] == b"2025-06"
    with pytest.raises(UnknownKeyError):
        await before.decode([written_after])


async def test_unknown_key_id_is_named_without_key_material() -> None:
    retired, current = new_key(), new_key()
    [old_payload] = await EncryptionCodec(Keyring({"retired": retired}, "retired")).encode(
        [plain_payload()]
    )
    codec = EncryptionCodec(Keyring.parse(f"current:{b64(current)}", "current"))
    with pytest.raises(UnknownKeyError) as caught:
        await codec.decode([old_payload])
    message = str(caught.value)
    assert "'retired'" in message
    assert "REFUNDS_ENCRYPTION_KEYS" in message
    for key in (retired, current):
        assert b64(key) not in message
        assert repr(key) not in message
    assert b64(current) not in repr(codec.keyring)


@pytest.mark.parametrize(
    ("keys", "key_id", "variable", "detail"),
    [
        ("k1:{key}", None, "REFUNDS_ENCRYPTION_KEY_ID", "not set"),
        (None, "k1", "REFUNDS_ENCRYPTION_KEYS", "not set"),
        ("k1:{key}", "k2", "REFUNDS_ENCRYPTION_KEY_ID", "no key with that id"),
        ("k1:{short}", "k1", "REFUNDS_ENCRYPTION_KEYS", "is 16 bytes"),
        ("k1:{key}!!", "k1", "REFUNDS_ENCRYPTION_KEYS", "not valid base64"),
        ("k1={key}", "k1", "REFUNDS_ENCRYPTION_KEYS", "id:base64key"),
        ("k1:{key},", "k1", "REFUNDS_ENCRYPTION_KEYS", "entry 2"),
        ("k 1:{key}", "k 1", "REFUNDS_ENCRYPTION_KEYS", "invalid key id"),
        ("k1:{key},k1:{key}", "k1", "REFUNDS_ENCRYPTION_KEYS", "appears twice"),
    ],
)
def test_settings_errors_name_the_variable_and_hide_the_keys(
    keys: str | None, key_id: str | None, variable: str, detail: str
) -> None:
    key, short = b64(new_key()), b64(os.urandom(16))
    text = keys.format(key=key, short=short) if keys is not None else None
    with pytest.raises(EncryptionSettingsError) as caught:
        data_converter(settings(text, key_id))
    message = str(caught.value)
    assert message.startswith(variable) or f"{variable} " in message
    assert detail in message
    assert key not in message
    assert short not in message


def test_encryption_is_off_without_settings() -> None:
    assert data_converter(settings(None, None)) is pydantic_data_converter
    assert data_converter(settings("  ", "")) is pydantic_data_converter


def test_encryption_on_encrypts_payloads_and_failure_messages() -> None:
    converter = data_converter(settings(f"k1:{b64(new_key())}", "k1"))
    assert isinstance(converter.payload_codec, EncryptionCodec)
    assert converter.payload_codec.keyring.active_id == "k1"
    assert converter.failure_converter_class is DefaultFailureConverterWithEncodedAttributes
    assert converter.payload_converter_class is pydantic_data_converter.payload_converter_class


async def test_failure_messages_are_encrypted_too() -> None:
    converter = encrypting_converter(Keyring({"k1": new_key()}, "k1"))
    failure = Failure()
    await converter.encode_failure(
        ApplicationError(f"account {ACCOUNT_ID} has no refundable balance", type="Forbidden"),
        failure,
    )
    stored = failure.SerializeToString()
    assert ACCOUNT_ID.encode() not in stored
    assert failure.message == "Encoded failure"
    decoded = await converter.decode_failure(failure)
    assert isinstance(decoded, ApplicationError)
    assert ACCOUNT_ID in decoded.message


# ------------------------------------------------ end to end, on the real dev server


@dataclass(frozen=True)
class StoredRefunds:
    address: str
    namespace: str
    codec: EncryptionCodec
    succeeded: RefundRequest
    rejected: RefundRequest


def temporal_cli() -> str:
    path = Path(sys.executable).parent / "temporal"
    if not path.exists():
        pytest.fail(f"temporal not found next to {sys.executable}: run `make install`")
    return str(path)


@pytest.fixture(scope="module")
async def stored() -> AsyncIterator[StoredRefunds]:
    """Two refunds run to the end with encryption on: one succeeds, one is refused with a
    failure message that names the account and the amount."""
    codec = EncryptionCodec(Keyring({"e2e-1": new_key()}, "e2e-1"))
    converter = encrypting_converter(codec.keyring)
    env = await WorkflowEnvironment.start_local(
        data_converter=converter,
        dev_server_existing_path=temporal_cli(),
        dev_server_extra_args=["--log-level", "error"],
    )
    async with env:
        await ensure_search_attributes(env.client, env.client.namespace)
        succeeded = request(f"codec-ok-{uuid.uuid4().hex[:12]}", str(uuid.uuid4()))
        rejected = request(f"codec-no-{uuid.uuid4().hex[:12]}", str(uuid.uuid4()))

        def refuse_one(call: int, info: activity.Info) -> None:
            if info.workflow_id == rejected.workflow_id:
                raise final_error(REFUSAL)

        fake = FakeProvider(validate_step=refuse_one)
        queue = f"codec-{uuid.uuid4().hex}"
        worker = Worker(
            env.client,
            task_queue=queue,
            workflows=[RefundWorkflow, RefundLaneWorkflow],
            activities=[*fake.all, *LaneActivities(env.client).all],
        )
        options = RefundOptions(poll_initial_s=0.1, poll_max_s=1)
        client = RefundClient(env.client, task_queue=queue, options=options)
        async with worker:
            for refund, expected in (
                (succeeded, RefundState.SUCCEEDED),
                (rejected, RefundState.REJECTED),
            ):
                await client.start(refund)
                handle = client.handle(refund.idempotency_key)
                status = await asyncio.wait_for(handle.result(), 10)
                assert status.state == expected
        yield StoredRefunds(
            address=env.client.service_client.config.target_host,
            namespace=env.client.namespace,
            codec=codec,
            succeeded=succeeded,
            rejected=rejected,
        )


async def workflow_show(stored: StoredRefunds, workflow_id: str, *flags: str) -> str:
    # Only our flags: no developer TEMPORAL_* variable or profile may add a codec endpoint.
    env = {k: v for k, v in os.environ.items() if not k.startswith("TEMPORAL_")}
    process = await asyncio.create_subprocess_exec(
        temporal_cli(),
        "workflow",
        "show",
        "--disable-config-file",
        "--disable-config-env",
        "--address",
        stored.address,
        "--namespace",
        stored.namespace,
        "--workflow-id",
        workflow_id,
        "--output",
        "json",
        *flags,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(process.communicate(), 15)
    assert process.returncode == 0, err.decode()
    return out.decode()


def readable(output: str, payloads: list[Payload]) -> bytes:
    """The output as printed plus every payload's data, base64 undone: what a reader sees."""
    return b"\n".join([output.encode(), *(payload.data for payload in payloads)])


NEEDLES = (*SECRETS, AMOUNT_MAJOR.encode())


async def test_workflow_show_reveals_no_reason_account_or_amount(stored: StoredRefunds) -> None:
    for refund in (stored.succeeded, stored.rejected):
        output = await workflow_show(stored, refund.workflow_id)
        payloads = list(payloads_in(json.loads(output)))
        seen = readable(output, payloads)
        for needle in (*NEEDLES, b"cannot take a refund"):
            assert needle not in seen, f"{needle!r} readable in {refund.workflow_id}'s history"
        encrypted = [p for p in payloads if p.metadata.get("encoding") == ENCODING]
        assert len(encrypted) >= 5
        # Search attributes stay in clear (and prove the scan reads payload data).
        assert refund.payment_id.encode() in seen


async def test_the_same_history_decoded_with_the_codec_shows_them(stored: StoredRefunds) -> None:
    for refund, extra in ((stored.succeeded, ()), (stored.rejected, (REFUSAL,))):
        output = await workflow_show(stored, refund.workflow_id)
        decoded = await stored.codec.decode(list(payloads_in(json.loads(output))))
        seen = readable("", decoded)
        for needle in (*NEEDLES, *(text.encode() for text in extra)):
            assert needle in seen, f"{needle!r} missing from {refund.workflow_id}, decoded"


async def test_the_codec_server_shows_them_to_an_operator(stored: StoredRefunds) -> None:
    app = create_app(stored.codec, auth_token="operator-token")
    with serve_in_thread(app) as url:
        output = await workflow_show(
            stored,
            stored.rejected.workflow_id,
            "--codec-endpoint",
            url,
            "--codec-auth",
            "Bearer operator-token",
        )
    seen = readable(output, list(payloads_in(json.loads(output))))
    for needle in (REASON.encode(), ACCOUNT_ID.encode(), REFUSAL.encode()):
        assert needle in seen
