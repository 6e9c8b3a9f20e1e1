"""Optional payload encryption and the codec server the Temporal UI decrypts through.

With ``REFUNDS_ENCRYPTION_KEYS`` and ``REFUNDS_ENCRYPTION_KEY_ID`` set, every payload a
refund puts in Temporal (input, results, memo, summary, query answers) and every failure
message and stack trace is AES-256-GCM encrypted; without them the converter is pydantic's
plain JSON. Search attributes and workflow ids are never encrypted. See docs/encryption.md.
"""

from __future__ import annotations

import dataclasses

from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter, DefaultFailureConverterWithEncodedAttributes

from codec.encryption import (
    EncryptionCodec,
    EncryptionSettingsError,
    Keyring,
    PayloadDecryptionError,
    UnknownKeyError,
)
from core.settings import Settings

__all__ = [
    "EncryptionCodec",
    "EncryptionSettingsError",
    "Keyring",
    "PayloadDecryptionError",
    "UnknownKeyError",
    "data_converter",
    "encrypting_converter",
]


def encrypting_converter(keyring: Keyring) -> DataConverter:
    """Pydantic's converter with every payload encrypted and failure messages moved into
    (encrypted) encoded attributes."""
    return dataclasses.replace(
        pydantic_data_converter,
        payload_codec=EncryptionCodec(keyring),
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )


def data_converter(settings: Settings) -> DataConverter:
    """The converter the settings ask for; raises :class:`EncryptionSettingsError` at start-up
    when the encryption settings are half set or malformed."""
    keyring = Keyring.from_settings(settings)
    if keyring is None:
        return pydantic_data_converter
    return encrypting_converter(keyring)
