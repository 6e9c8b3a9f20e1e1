"""Connecting to Temporal (with the project's data converter and payload codec) and
registering the search attributes refunds are indexed by.

Shared by the worker, the starter and the dev stack; above ``core/``, which imports nothing
of the project. The data converter is pydantic's, so models travel as plain JSON any SDK can
read and write.
"""

from __future__ import annotations

from collections.abc import Sequence

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.client import Client, Interceptor
from temporalio.runtime import Runtime
from temporalio.service import RPCError, RPCStatusCode

from codec import data_converter
from core.models import SEARCH_ATTRIBUTES
from core.settings import Settings


class SearchAttributesMissingError(RuntimeError):
    """The namespace lacks our search attributes and the server would not add them."""


async def connect(
    settings: Settings,
    *,
    interceptors: Sequence[Interceptor] = (),
    runtime: Runtime | None = None,
) -> Client:
    """``interceptors``: e.g. tracing (workers built on the client use them too); ``runtime``:
    one serving metrics (``telemetry.metrics``), else the SDK's default runtime."""
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=data_converter(settings),
        interceptors=interceptors,
        runtime=runtime,
    )


def register_command(namespace: str, names: list[str]) -> str:
    flags = " ".join(f"--name {n} --type Keyword" for n in names)
    return f"temporal operator search-attribute create --namespace {namespace} {flags}"


async def ensure_search_attributes(client: Client, namespace: str) -> list[str]:
    """Register missing search attributes where the server allows; returns those added."""
    names = [key.name for key in SEARCH_ATTRIBUTES]
    try:
        listed = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=namespace)
        )
    except RPCError as err:
        # The time-skipping test server can add attributes but not list them.
        if err.status != RPCStatusCode.UNIMPLEMENTED:
            raise
        missing = names
    else:
        have = set(listed.custom_attributes) | set(listed.system_attributes)
        missing = [name for name in names if name not in have]
    if not missing:
        return []
    try:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(
                namespace=namespace,
                search_attributes={
                    name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD for name in missing
                },
            )
        )
    except RPCError as err:
        if err.status == RPCStatusCode.ALREADY_EXISTS:
            return []
        if err.status in (RPCStatusCode.PERMISSION_DENIED, RPCStatusCode.UNIMPLEMENTED):
            raise SearchAttributesMissingError(
                f"search attributes {', '.join(missing)} are missing in namespace "
                f"{namespace!r} and this server does not let the worker add them. "
                f"Run: {register_command(namespace, missing)}"
            ) from None
        raise
    return missing
