"""Connecting to Temporal (with the project's data converter and payload codec) and
registering the search attributes refunds are indexed by.

Shared by the worker, the starter, the HTTP API and the dev stack; above ``core/``, which
imports nothing of the project. The data converter is pydantic's, so models travel as plain
JSON any SDK can read and write.

Where to connect, and how, is the Temporal SDK's own environment configuration
(``temporalio.envconfig``), the settings the ``temporal`` CLI reads too: ``TEMPORAL_ADDRESS``,
``TEMPORAL_NAMESPACE``, ``TEMPORAL_API_KEY``, ``TEMPORAL_TLS``, ``TEMPORAL_TLS_*``,
``TEMPORAL_GRPC_META_*``, and a profile (``TEMPORAL_PROFILE``, default ``default``) of the TOML
file at ``TEMPORAL_CONFIG_FILE`` (default ``~/.config/temporalio/temporal.toml``). Precedence,
highest first:

1. an address or namespace the project passes in :class:`Settings` (``Settings(
   temporal_address=...)``, as the dev stack does), or that ``Settings`` read from the
   environment or ``.env``;
2. the process environment, then ``TEMPORAL_*`` lines of ``.env`` (the SDK reads only the
   process environment; this module hands it ``.env``'s too, as ``Settings`` reads it);
3. the profile in the TOML file;
4. the defaults: ``localhost:7233``, namespace ``default``, no TLS.

An empty variable counts as unset (the SDK would take an empty ``TEMPORAL_TLS`` or
``TEMPORAL_API_KEY`` as "TLS on"). Credentials (the API key, the client's private key) never
reach a message, a log or a ``repr`` from here.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dotenv import dotenv_values
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.client import Client, Interceptor
from temporalio.envconfig import ClientConfig, ClientConfigProfile, DataSource
from temporalio.runtime import Runtime
from temporalio.service import RPCError, RPCStatusCode, TLSConfig

from codec import data_converter
from core.models import SEARCH_ATTRIBUTES
from core.settings import Settings

ENV_PREFIX = "TEMPORAL_"
DEFAULT_CONFIG_FILE = "~/.config/temporalio/temporal.toml"
# The SDK's variables besides the address and namespace: what secures a connection, and which
# profile of which file to read. A process that must reach a plain server of its own (the dev
# stack's) is given none of them (see plain_environment).
SECURING_ENV = (
    "TEMPORAL_API_KEY",
    "TEMPORAL_TLS",
    "TEMPORAL_TLS_CLIENT_CERT_PATH",
    "TEMPORAL_TLS_CLIENT_CERT_DATA",
    "TEMPORAL_TLS_CLIENT_KEY_PATH",
    "TEMPORAL_TLS_CLIENT_KEY_DATA",
    "TEMPORAL_TLS_SERVER_CA_CERT_PATH",
    "TEMPORAL_TLS_SERVER_CA_CERT_DATA",
    "TEMPORAL_TLS_SERVER_NAME",
    "TEMPORAL_TLS_DISABLE_HOST_VERIFICATION",
    "TEMPORAL_PROFILE",
)
# Every name this project documents (README, deploy/README.md, .env.example, compose).
SDK_ENV = ("TEMPORAL_ADDRESS", "TEMPORAL_NAMESPACE", *SECURING_ENV, "TEMPORAL_CONFIG_FILE")
_BOOLEANS = {"true": True, "1": True, "false": False, "0": False}


class SearchAttributesMissingError(RuntimeError):
    """The namespace lacks our search attributes and the server would not add them."""


class TemporalConfigError(Exception):
    """The Temporal connection settings cannot be used (an unknown profile, an unreadable
    certificate, a bad value); the message names what to fix and holds no credential. Not a
    ``RuntimeError``: retrying a connection does not mend it."""


class TemporalConnectError(RuntimeError):
    """Temporal could not be reached with these settings (nothing listening, a TLS handshake
    refused either way, credentials refused); the message says which, without credentials."""

    def __init__(self, target: TemporalTarget, reason: str) -> None:
        super().__init__(f"cannot reach Temporal at {target.describe()}: {reason}")
        self.target = target
        self.reason = reason


@dataclass(frozen=True)
class TemporalTarget:
    """Where and how to connect, resolved from the settings and the SDK's configuration.
    Only the address and the namespace show in its ``repr``."""

    address: str
    namespace: str
    tls: bool | TLSConfig = field(default=False, repr=False)
    api_key: str | None = field(default=None, repr=False)
    rpc_metadata: Mapping[str, str] = field(default_factory=dict, repr=False)

    @property
    def client_certificate(self) -> bool:
        return isinstance(self.tls, TLSConfig) and self.tls.client_cert is not None

    def describe(self) -> str:
        """``host:port (namespace ns, TLS with a client certificate, API key)``: what a log
        line or an error may say about the connection."""
        details = [f"namespace {self.namespace}"]
        if self.tls is not False:
            details.append("TLS with a client certificate" if self.client_certificate else "TLS")
        if self.api_key:
            details.append("API key")
        return f"{self.address} ({', '.join(details)})"


def temporal_environment(settings: Settings) -> dict[str, str]:
    """The variables the SDK's configuration is read from: the process environment over the
    ``TEMPORAL_*`` lines of the ``.env`` file ``settings`` reads, empty ones left out."""
    merged: dict[str, str] = {}
    env_file = settings.model_config.get("env_file")
    files: list[str | os.PathLike[str]] = []
    if isinstance(env_file, (str, os.PathLike)):
        files = [env_file]
    elif isinstance(env_file, (list, tuple)):
        files = list(env_file)
    for path in files:
        if not Path(path).is_file():
            continue
        for name, value in dotenv_values(path).items():
            if name.startswith(ENV_PREFIX) and value is not None:
                merged[name] = value
    merged.update(os.environ)
    return {name: value for name, value in merged.items() if value != ""}


def plain_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` for a process that connects to a plain, local server of its own (the dev
    stack's), whatever the shell was set up for: without the securing variables, TLS off
    (``TEMPORAL_TLS=false``, which also overrides a ``.env``; the ``temporal`` CLI, unlike this
    module, takes an empty one as "on") and no config file."""
    kept = {name: value for name, value in environ.items() if name not in SECURING_ENV}
    return {**kept, "TEMPORAL_TLS": "false", "TEMPORAL_CONFIG_FILE": os.devnull}


def resolve_target(settings: Settings, environ: Mapping[str, str] | None = None) -> TemporalTarget:
    """Where and how :func:`connect` connects (precedence in the module's docstring).
    ``environ``: the variables to read instead of the process environment and ``.env``.
    Raises :class:`TemporalConfigError`."""
    env = (
        temporal_environment(settings)
        if environ is None
        else {name: value for name, value in environ.items() if value != ""}
    )
    _check_values(env)
    try:
        profile = ClientConfigProfile.load(override_env_vars=env)
    except RuntimeError as err:  # the SDK's ConfigError
        raise TemporalConfigError(_config_problem(err, env)) from None
    tls: bool | TLSConfig = False
    if profile.tls is not None and profile.tls.disabled is not True:
        tls = TLSConfig(
            domain=profile.tls.server_name,
            server_root_ca_cert=_pem(profile.tls.server_root_ca_cert, "server_ca_cert"),
            client_cert=_pem(profile.tls.client_cert, "client_cert"),
            client_private_key=_pem(profile.tls.client_private_key, "client_key"),
        )
        if (tls.client_cert is None) != (tls.client_private_key is None):
            raise TemporalConfigError(
                "a client certificate needs its private key and the key its certificate: set "
                "both TEMPORAL_TLS_CLIENT_CERT_PATH and TEMPORAL_TLS_CLIENT_KEY_PATH (or _DATA)"
            )
    elif profile.tls is None and profile.api_key:
        tls = True  # the SDK's rule: an API key turns TLS on unless TLS is configured
    fields_set = settings.model_fields_set
    address = settings.temporal_address
    if "temporal_address" not in fields_set and profile.address:
        address = profile.address
    namespace = settings.temporal_namespace
    if "temporal_namespace" not in fields_set and profile.namespace:
        namespace = profile.namespace
    return TemporalTarget(
        address=address,
        namespace=namespace,
        tls=tls,
        api_key=profile.api_key or None,
        rpc_metadata=dict(profile.grpc_meta),
    )


async def connect(
    settings: Settings,
    *,
    interceptors: Sequence[Interceptor] = (),
    runtime: Runtime | None = None,
    environ: Mapping[str, str] | None = None,
) -> Client:
    """``interceptors``: e.g. tracing (workers built on the client use them too); ``runtime``:
    one serving metrics (``telemetry.metrics``), else the SDK's default runtime; ``environ``:
    see :func:`resolve_target`. Raises :class:`TemporalConfigError` for settings that cannot
    work, :class:`TemporalConnectError` when the server cannot be reached with them."""
    target = resolve_target(settings, environ)
    try:
        return await Client.connect(
            target.address,
            namespace=target.namespace,
            api_key=target.api_key,
            tls=target.tls,
            rpc_metadata=target.rpc_metadata,
            data_converter=data_converter(settings),
            interceptors=interceptors,
            runtime=runtime,
        )
    except (RuntimeError, RPCError) as err:
        raise TemporalConnectError(target, _connect_problem(str(err), target)) from None


# ------------------------------------------------------------------- what went wrong


def _check_values(env: Mapping[str, str]) -> None:
    """Refuse what the SDK would silently misread."""
    for name in ("TEMPORAL_TLS", "TEMPORAL_TLS_DISABLE_HOST_VERIFICATION"):
        value = env.get(name)
        if value is not None and value.lower() not in _BOOLEANS:
            raise TemporalConfigError(f"{name} must be true or false, not {value!r}")
    if _BOOLEANS.get(env.get("TEMPORAL_TLS_DISABLE_HOST_VERIFICATION", "").lower()):
        # The Python SDK reads the setting but has no way to honour it: refuse it rather than
        # verify anyway and fail later with a certificate error that would puzzle.
        raise TemporalConfigError(
            "TEMPORAL_TLS_DISABLE_HOST_VERIFICATION=true is not supported by the Temporal Python "
            "SDK: the server's certificate is always verified. Set TEMPORAL_TLS_SERVER_NAME to a "
            "name the certificate carries and TEMPORAL_TLS_SERVER_CA_CERT_PATH to its CA"
        )


_SOURCE_NAMES = {
    "server_ca_cert": ("the server CA certificate", "TEMPORAL_TLS_SERVER_CA_CERT", "CERTIFICATE"),
    "client_cert": ("the client certificate", "TEMPORAL_TLS_CLIENT_CERT", "CERTIFICATE"),
    "client_key": ("the client private key", "TEMPORAL_TLS_CLIENT_KEY", "PRIVATE KEY"),
}


def _pem(source: DataSource | None, kind: str) -> bytes | None:
    """The PEM bytes of a TLS setting (a path or the data itself), checked to be PEM of the
    right kind; never quoted in an error (a key is a credential)."""
    if source is None:
        return None
    what, env_name, label = _SOURCE_NAMES[kind]
    names = f"{env_name}_PATH / {env_name}_DATA, or the profile's tls.{kind}_path / _data"
    if isinstance(source, Path):
        try:
            data = source.read_bytes()
        except OSError as err:
            raise TemporalConfigError(
                f"cannot read {what} {source} ({names}): {err.strerror or err}"
            ) from None
        where = str(source)
    else:
        data = source.encode() if isinstance(source, str) else source
        where = "given as data"
    if not re.search(rb"-----BEGIN [A-Z ]*" + label.encode() + rb"-----", data):
        raise TemporalConfigError(f"{what} ({where}; {names}) is not a PEM {label.lower()}")
    return data


def _config_problem(err: RuntimeError, env: Mapping[str, str]) -> str:
    message = str(err).splitlines()[0] if str(err) else type(err).__name__
    file = env.get("TEMPORAL_CONFIG_FILE") or DEFAULT_CONFIG_FILE
    missing = re.match(r"Profile '(.*)' not found", message)
    if missing:
        try:
            names = sorted(ClientConfig.load(override_env_vars=env).profiles)
        except RuntimeError:
            names = []
        known = f"profiles there: {', '.join(names)}" if names else "it names no profile"
        return (
            f"Temporal profile {missing.group(1)!r} (TEMPORAL_PROFILE) is not in the config "
            f"file {file} (TEMPORAL_CONFIG_FILE); {known}"
        )
    # A TOML parse error quotes the line it stopped at, which may hold an API key: keep
    # only its first line (where it stopped) and leave out anything secret besides.
    for name in ("TEMPORAL_API_KEY", "TEMPORAL_TLS_CLIENT_KEY_DATA"):
        secret = env.get(name)
        if secret:
            message = message.replace(secret, "***")
    return f"the Temporal connection settings cannot be used ({file}): {message}"


def _connect_problem(text: str, target: TemporalTarget) -> str:
    """One clause a person can act on, from the SDK's transport error."""
    found = text.lower()
    if "connection refused" in found or "connectionrefused" in found:
        return (
            "is the server running? `refunds dev` starts one, or set TEMPORAL_ADDRESS "
            "(or TEMPORAL_PROFILE) to yours"
        )
    if "notvalidforname" in found:
        name = target.tls.domain if isinstance(target.tls, TLSConfig) else None
        return (
            f"the server's TLS certificate is not valid for the name "
            f"{name or target.address.rsplit(':', 1)[0]}: set TEMPORAL_TLS_SERVER_NAME to a "
            f"name it carries"
        )
    if "unknownissuer" in found or "invalidcertificate" in found:
        kind = re.search(r"invalidcertificate\((\w+)", found)
        given = isinstance(target.tls, TLSConfig) and target.tls.server_root_ca_cert is not None
        trusted = (
            "the server CA certificate given (TEMPORAL_TLS_SERVER_CA_CERT_PATH)"
            if given
            else "the system's CAs: set TEMPORAL_TLS_SERVER_CA_CERT_PATH to the CA that signed it"
        )
        detail = f" ({kind.group(1)})" if kind and kind.group(1) != "unknownissuer" else ""
        return f"the server's TLS certificate is not trusted{detail}: not signed by {trusted}"
    if "invalidcontenttype" in found or "invalidmessage" in found:
        return (
            "the server does not speak TLS there: leave TEMPORAL_TLS (and TEMPORAL_API_KEY) "
            "unset for a plain server, or check the address"
        )
    if "privatekeyparseerror" in found:
        return "the client private key cannot be used (TEMPORAL_TLS_CLIENT_KEY_PATH)"
    if "code: unauthenticated" in found or "code: permissiondenied" in found:
        return (
            "the server refused the credentials: check TEMPORAL_API_KEY or the client certificate"
        )
    closed = any(
        sign in found
        for sign in (
            "close_notify",
            "unexpectedeof",
            "broken pipe",
            "connectionreset",
            "reset by",
            "connection closed",
        )
    )
    if closed and target.tls is not False:
        if not target.client_certificate:
            return (
                "the server closed the TLS connection: it may require a client certificate "
                "(mTLS): set TEMPORAL_TLS_CLIENT_CERT_PATH and TEMPORAL_TLS_CLIENT_KEY_PATH"
            )
        return (
            "the server closed the TLS connection: it refused the client certificate "
            "(TEMPORAL_TLS_CLIENT_CERT_PATH): is it signed by a CA the server trusts?"
        )
    if closed:
        return (
            "the server closed the connection: if it takes TLS only, set TEMPORAL_TLS=true "
            "(and TEMPORAL_TLS_SERVER_CA_CERT_PATH for a private CA)"
        )
    if target.api_key:
        text = text.replace(target.api_key, "***")
    return "the connection failed: " + " ".join(text.split())[:300]


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
