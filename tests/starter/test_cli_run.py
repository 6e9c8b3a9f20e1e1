"""`run(argv) -> exit code`: one stderr line per failure, and the exit code table.

Commands that need Temporal get a fake client through ``cli.runner.connect``; invalid input
must fail before any connection is even attempted.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cli import main as cli
from core.models import ProviderName, RefundRequest, RefundState, RefundStatus
from starter.client import (
    IdempotencyConflictError,
    RefundClient,
    RefundClientError,
    RefundListItem,
    RefundNotFoundError,
    StartedRefund,
)
from tests.support.cli import refuse_connections, serve

REPO = Path(__file__).resolve().parents[2]
PAYNOW_START = [
    "start",
    "--provider",
    "paynow",
    "--payment-id",
    "NOLV-8F9-08K-WGD",
    "--amount",
    "12.34",
    "--currency",
    "PLN",
    "--reason",
    "returned",
    "--key",
    "order-1",
]


def status_of(key: str, state: RefundState = RefundState.SUCCEEDED) -> RefundStatus:
    return RefundStatus(
        key=key,
        workflow_id=f"refund:{key}",
        provider=ProviderName.PAYNOW,
        payment_id="NOLV-8F9-08K-WGD",
        state=state,
        amount_minor=1234,
        currency="PLN",
        provider_refund_id="R1",
        provider_status="SUCCESSFUL",
        started_at=datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC),
    )


class FakeClient(RefundClient):
    """Answers like RefundClient without a server; ``error`` is raised by every call."""

    def __init__(self, *, created: bool = True, error: Exception | None = None) -> None:
        self.created = created
        self.error = error
        self.started: list[RefundRequest] = []
        self.traceparents: list[str | None] = []

    def _fail(self) -> None:
        if self.error is not None:
            raise self.error

    async def start(
        self,
        request: RefundRequest,
        traceparent: str | None = None,
        *,
        started_by: str | None = None,
    ) -> StartedRefund:
        self._fail()
        self.started.append(request)
        self.traceparents.append(traceparent)
        return StartedRefund(request.idempotency_key, request.workflow_id, self.created)

    async def wait(self, key: str) -> RefundStatus:
        self._fail()
        return status_of(key)

    async def status(self, key: str) -> RefundStatus:
        self._fail()
        return status_of(key, RefundState.PENDING)

    async def cancel(self, key: str, reason: str) -> RefundStatus:
        self._fail()
        return status_of(key, RefundState.PENDING)

    async def list(
        self,
        *,
        state: RefundState | None = None,
        provider: ProviderName | None = None,
        limit: int = 100,
    ) -> list[RefundListItem]:
        self._fail()
        return [
            RefundListItem(
                key="order-1",
                workflow_id="refund:order-1",
                state="SUCCEEDED",
                provider="paynow",
                payment_id="NOLV-8F9-08K-WGD",
                amount="12.34 PLN",
                execution_status="COMPLETED",
                started_at=datetime(2025, 1, 2, tzinfo=UTC),
            )
        ]


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeClient:
    return serve(monkeypatch, FakeClient())


@pytest.fixture
def no_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to reach Temporal fails the test."""
    refuse_connections(monkeypatch, "invalid input must not reach Temporal")


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err
    return lines[0]


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.run(["--help"]) == 0
    text = capsys.readouterr().out
    commands = ("start", "status", "cancel", "list", "batch", "worker", "sim", "dev", "demo")
    for command in (*commands, "codec-server", "chaos"):
        assert re.search(rf"^    {command}\s", text, re.MULTILINE), command
    assert "start a refund" in text
    assert "exit codes" in text


def test_command_help_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.run(["start", "--help"]) == 0
    assert "--transfer SELLER:GROSS:FEE" in capsys.readouterr().out


@pytest.mark.usefixtures("no_server")
def test_sub_minor_amount_exits_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    argv = [*PAYNOW_START]
    argv[argv.index("12.34")] = "12.345"
    assert cli.run(argv) == 2
    assert one_error_line(capsys) == (
        "refunds: error: invalid --amount: amount 12.345 has more decimals than PLN allows (2)"
    )


@pytest.mark.usefixtures("no_server")
def test_model_validation_names_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    argv = [*PAYNOW_START]
    argv[argv.index("order-1")] = "order 1!"
    assert cli.run(argv) == 2
    line = one_error_line(capsys)
    assert line.startswith("refunds: error: invalid request: --key: String should match pattern")


@pytest.mark.usefixtures("no_server")
def test_provider_checks_run_offline(capsys: pytest.CaptureFixture[str]) -> None:
    argv = [*PAYNOW_START]
    argv[argv.index("NOLV-8F9-08K-WGD")] = "not-a-paynow-id"
    assert cli.run(argv) == 2
    line = one_error_line(capsys)
    assert line.startswith("refunds: error: invalid request: refund request refused")
    assert "payment_id 'not-a-paynow-id' is not a Paynow payment id" in line


@pytest.mark.usefixtures("no_server")
def test_mews_needs_an_account(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["start", "--provider", "mews", "--payment-id", "6d1b2c3a-0001-4a5b-8c6d-7e8f9a0b1c01"]
    assert cli.run([*argv, "--reason", "r", "--key", "k"]) == 2
    assert "account_id is required for Mews" in one_error_line(capsys)


@pytest.mark.usefixtures("no_server")
def test_argparse_errors_exit_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.run(["start", "--provider", "paynow"]) == 2
    line = one_error_line(capsys)
    assert line.startswith("refunds: error: the following arguments are required")
    assert line.endswith("(see `refunds start --help`)")
    assert cli.run([]) == 2
    assert "COMMAND" in one_error_line(capsys)


@pytest.mark.usefixtures("no_server")
def test_bad_settings_exit_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REFUNDS_POLL_INITIAL_S", "soon")
    assert cli.run(["status", "order-1"]) == 2
    assert "invalid settings: REFUNDS_POLL_INITIAL_S" in one_error_line(capsys)


def test_start_prints_created(fake: FakeClient, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.run(PAYNOW_START) == 0
    out = capsys.readouterr().out
    assert "created: refund:order-1" in out
    assert "Refund 12.34 PLN of paynow payment NOLV-8F9-08K-WGD" in out
    assert fake.started[0].amount_minor == 1234


def test_start_attached_wait_json(fake: FakeClient, capsys: pytest.CaptureFixture[str]) -> None:
    fake.created = False
    assert cli.run([*PAYNOW_START, "--wait", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["created"] is False
    assert answer["workflow_id"] == "refund:order-1"
    assert answer["status"]["state"] == "SUCCEEDED"
    assert answer["status"]["amount_minor"] == 1234


@pytest.mark.parametrize(
    ("error", "code", "fragment"),
    [
        (IdempotencyConflictError("order-1"), 3, "conflict"),
        (RefundNotFoundError("no refund with key 'order-1'"), 4, "no refund with key"),
        (RefundClientError("refund 'order-1' is already SUCCEEDED"), 1, "already"),
        (RuntimeError("boom\nsecond line"), 1, "RuntimeError: boom second line"),
    ],
)
def test_client_errors_map_to_exit_codes(
    fake: FakeClient,
    capsys: pytest.CaptureFixture[str],
    error: Exception,
    code: int,
    fragment: str,
) -> None:
    fake.error = error
    for argv in (PAYNOW_START, ["status", "order-1"], ["cancel", "order-1", "--reason", "x"]):
        assert cli.run(argv) == code
        assert fragment in one_error_line(capsys)


def test_status_json_is_the_status_model(
    fake: FakeClient, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.run(["status", "order-1", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer == status_of("order-1", RefundState.PENDING).model_dump(mode="json")


def test_status_for_people(fake: FakeClient, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.run(["status", "order-1"]) == 0
    out = capsys.readouterr().out
    assert "state            PENDING" in out
    assert "amount           12.34 PLN" in out


def test_list_table_and_json(fake: FakeClient, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.run(["list", "--state", "SUCCEEDED"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == [
        "KEY",
        "STATE",
        "PROVIDER",
        "PAYMENT",
        "AMOUNT",
        "STARTED",
    ]
    assert "order-1" in out
    assert out.splitlines()[-1] == "1 refund", "counts in words, not 'refund(s)'"
    assert cli.run(["list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed[0]["key"] == "order-1"
    assert listed[0]["started_at"] == "2025-01-02T00:00:00+00:00"


def test_main_exits_with_our_code_through_os_exit() -> None:
    """The real entry point in a child process: exit code 2 and one line, nothing else."""
    argv = [*PAYNOW_START]
    argv[argv.index("12.34")] = "12.345"
    done = subprocess.run(
        [sys.executable, "-m", "cli", *argv],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        "refunds: error: invalid --amount: amount 12.345 has more decimals than PLN allows (2)"
    ]


def test_worker_without_credentials_exits_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env here
    for name in (
        "MEWS_CLIENT_TOKEN",
        "MEWS_ACCESS_TOKEN",
        "PAYNOW_API_KEY",
        "PAYNOW_SIGNATURE_KEY",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PAYNOW_API_KEY", "only-one-of-two")
    assert cli.run(["worker"]) == 2
    line = one_error_line(capsys)
    assert line.startswith("refunds: error: PAYNOW_SIGNATURE_KEY is not set")


@pytest.mark.parametrize(
    ("keys", "key_id", "expected"),
    [
        (None, None, "the codec server needs REFUNDS_ENCRYPTION_KEYS and"),
        ("k1:not-base64!", "k1", "REFUNDS_ENCRYPTION_KEYS"),
        ("k1:" + "A" * 44, None, "REFUNDS_ENCRYPTION_KEY_ID"),
    ],
)
def test_codec_server_without_usable_keys_exits_2(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    keys: str | None,
    key_id: str | None,
    expected: str,
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env here
    for name, value in (("REFUNDS_ENCRYPTION_KEYS", keys), ("REFUNDS_ENCRYPTION_KEY_ID", key_id)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    assert cli.run(["codec-server", "--port", "1"]) == 2
    line = one_error_line(capsys)
    assert line.startswith("refunds: error: "), line
    assert expected in line
    assert "A" * 44 not in line, "key material in the message"


TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_start_continues_the_callers_trace(
    fake: FakeClient, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("TRACEPARENT", raising=False)
    assert cli.run([*PAYNOW_START, "--traceparent", TRACEPARENT]) == 0
    assert cli.run(PAYNOW_START) == 0
    # The OpenTelemetry environment carrier, for callers that run `refunds` as a child.
    monkeypatch.setenv("TRACEPARENT", TRACEPARENT)
    assert cli.run(PAYNOW_START) == 0
    # An unreadable inherited value starts a new trace rather than refusing the refund.
    monkeypatch.setenv("TRACEPARENT", "garbage")
    assert cli.run(PAYNOW_START) == 0
    assert fake.traceparents == [TRACEPARENT, None, TRACEPARENT, None]


@pytest.mark.usefixtures("no_server")
@pytest.mark.parametrize(
    "value", ["garbage", "00-" + "0" * 32 + "-00f067aa0ba902b7-01", TRACEPARENT[:-3]]
)
def test_a_bad_traceparent_flag_exits_2(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.run([*PAYNOW_START, "--traceparent", value]) == 2
    line = one_error_line(capsys)
    assert line.startswith("refunds: error: invalid --traceparent: "), line
    assert "is not a W3C traceparent" in line
