"""Find Temporal payloads in a history as proto JSON (``temporal workflow show`` or the SDK)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from google.protobuf import json_format
from temporalio.api.common.v1 import Payload


def payloads_in(node: Any) -> Iterator[Payload]:
    """Every proto-JSON Payload (``{"metadata": {...}, "data": "..."}``) under ``node``."""
    if isinstance(node, dict):
        if isinstance(node.get("metadata"), dict) and "encoding" in node["metadata"]:
            yield json_format.ParseDict(node, Payload())
            return
        for child in node.values():
            yield from payloads_in(child)
    elif isinstance(node, list):
        for child in node:
            yield from payloads_in(child)
