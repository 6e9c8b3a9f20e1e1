"""HTTP plumbing: `Retry-After` parsing and the one place transport errors are translated."""

from __future__ import annotations

import socket
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from providers.errors import ProviderConnectError, ProviderError, UnknownOutcomeError
from providers.http import build_client, parse_retry_after, translate_transport_errors

NOW = datetime(2015, 10, 21, 7, 28, 0, tzinfo=UTC)
SECRET = "s3cr3t-access-token-0000"

# --- Retry-After -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("120", 120.0),
        ("0", 0.0),
        (" 5 ", 5.0),
        ("\t7\r\n", 7.0),
        ("1.5", 1.5),
        ("-1", 0.0),
        ("-0.5", 0.0),
    ],
)
def test_delta_seconds(header: str, seconds: float) -> None:
    assert parse_retry_after(header, now=NOW) == seconds


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),
        ("Wed, 21 Oct 2015 07:29:00 GMT", 60.0),
        ("Wed, 21 Oct 2015 08:28:00 GMT", 3600.0),
        ("Wed, 21 Oct 2015 09:29:30 +0200", 90.0),
        ("Wed, 21 Oct 2015 07:28:30 -0000", 30.0),  # no zone information: taken as UTC
        ("  Wed, 21 Oct 2015 07:28:45 GMT  ", 45.0),
    ],
)
def test_http_date(header: str, seconds: float) -> None:
    assert parse_retry_after(header, now=NOW) == seconds


@pytest.mark.parametrize(
    "header",
    [
        "Wed, 21 Oct 2015 07:27:59 GMT",
        "Tue, 20 Oct 2015 07:28:00 GMT",
        "Thu, 01 Jan 1970 00:00:00 GMT",
    ],
)
def test_http_date_in_the_past_is_zero(header: str) -> None:
    assert parse_retry_after(header, now=NOW) == 0.0


def test_http_date_is_measured_from_the_current_time_by_default() -> None:
    in_an_hour = datetime.now(UTC) + timedelta(hours=1)
    header = in_an_hour.strftime("%a, %d %b %Y %H:%M:%S GMT")
    seconds = parse_retry_after(header)
    assert seconds is not None
    assert 3500 < seconds <= 3600


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "   ",
        "soon",
        "later, please",
        "12 seconds",
        "0x10",
        "Wed, 32 Oct 2015 07:28:00 GMT",
        "inf",
        "-inf",
        "Infinity",
        "nan",
        "NaN",
        "1e400",
    ],
)
def test_absent_garbage_and_non_finite_give_none(header: str | None) -> None:
    assert parse_retry_after(header, now=NOW) is None


# --- the transport translator, through a real AsyncClient --------------------------------------

Raiser = Callable[[httpx.Request], httpx.Response]


def raising(exc_type: type[httpx.TransportError], message: str) -> Raiser:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc_type(message, request=request)

    return handler


async def call_through(
    handler: Raiser, *, secrets: tuple[str, ...] = (), method: str = "POST"
) -> httpx.Response:
    async with (
        httpx.AsyncClient(
            transport=httpx.MockTransport(handler), base_url="https://api.example.test"
        ) as client,
        translate_transport_errors("mews", "payments/refund", secrets=secrets),
    ):
        return await client.request(method, "/api/connector/v1/payments/refund", json={})


NOT_SENT = [httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol]
MAYBE_SENT = [
    httpx.ReadTimeout,
    httpx.WriteTimeout,
    httpx.RemoteProtocolError,
    httpx.ReadError,
    httpx.WriteError,
    httpx.ProxyError,
]


@pytest.mark.parametrize("exc_type", NOT_SENT)
async def test_not_sent_becomes_a_connect_error(exc_type: type[httpx.TransportError]) -> None:
    with pytest.raises(ProviderConnectError) as caught:
        await call_through(raising(exc_type, "connection refused"))
    error = caught.value
    assert type(error) is ProviderConnectError
    assert error.retryable is True
    assert error.outcome_unknown is False
    assert error.provider == "mews"
    # The operator's sentence, then the transport's words once as the detail.
    assert error.message == (
        "Could not reach Mews for the refund of the whole payment: nothing was sent and it is "
        "tried again automatically; nothing to do unless it lasts (then check the network "
        "and the worker's Mews address)."
    )
    assert error.detail == f"{exc_type.__name__}: connection refused"
    assert str(error) == f"{error.message} Detail: {exc_type.__name__}: connection refused."
    # The raw httpx exception is not chained, so it cannot travel on in a failure's cause.
    assert error.__cause__ is None


@pytest.mark.parametrize("exc_type", MAYBE_SENT)
async def test_maybe_sent_becomes_an_unknown_outcome(exc_type: type[httpx.TransportError]) -> None:
    with pytest.raises(UnknownOutcomeError) as caught:
        await call_through(raising(exc_type, "peer went away"))
    error = caught.value
    assert type(error) is UnknownOutcomeError
    assert error.outcome_unknown is True
    assert error.retryable is True
    assert error.provider == "mews"
    assert error.message.startswith(
        "Mews did not answer the refund of the whole payment after it was sent"
    )
    assert error.detail == f"{exc_type.__name__}: peer went away"
    assert error.__cause__ is None


@pytest.mark.parametrize("exc_type", [*NOT_SENT, *MAYBE_SENT])
async def test_secret_in_the_httpx_message_is_redacted(
    exc_type: type[httpx.TransportError],
) -> None:
    handler = raising(exc_type, f"failed at https://api.example.test/?token={SECRET}")
    with pytest.raises(ProviderError) as caught:
        await call_through(handler, secrets=("", "ab", SECRET))
    error = caught.value
    for text in (str(error), repr(error), error.detail or "", *map(str, error.args)):
        assert SECRET not in text
    for text in (str(error), repr(error), error.detail or ""):
        assert "token=***" in text


async def test_a_real_refused_connection_is_a_connect_error() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    # Nothing listens on the port any more.
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5.0) as client:
        with pytest.raises(ProviderConnectError):
            async with translate_transport_errors("paynow", "create refund"):
                await client.get("/v3/refunds/R-1/status")


async def test_answers_pass_through_whatever_their_status() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, json={"Message": "down"}, request=request)

    response = await call_through(handler)
    assert response.status_code == 503


async def test_non_transport_exceptions_are_not_translated() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, request=request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        response = await client.get("https://api.example.test/")
        with pytest.raises(httpx.HTTPStatusError):
            async with translate_transport_errors("mews", "payments/getAll"):
                response.raise_for_status()
    with pytest.raises(KeyError):
        async with translate_transport_errors("mews", "payments/getAll"):
            raise KeyError("Payments")


async def test_success_inside_the_block_is_untouched() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"RefundId": "r-1"}, request=request)

    response = await call_through(handler)
    assert response.json() == {"RefundId": "r-1"}


# --- the production client ---------------------------------------------------------------------


async def test_build_client_sets_base_url_timeout_and_user_agent() -> None:
    client = build_client(base_url="https://api.mews-demo.com", timeout_s=3.5, user_agent="ua/1")
    async with client:
        assert client.base_url == httpx.URL("https://api.mews-demo.com")
        assert client.timeout == httpx.Timeout(3.5)
        assert client.headers["User-Agent"] == "ua/1"
