"""`refunds resolve` (parsing, output, exit codes) and what `refunds status` shows of an
operator's work: the attention, what to do, the resolutions and the confirmed money."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from cli import main as cli
from cli import output
from cli.requests import build_resolution
from core.models import RefundState, RefundStatus, Resolution, ResolveAction
from starter.client import RefundNotFoundError, ResolutionRefusedError
from tests.starter.test_cli_run import FakeClient, one_error_line, status_of
from tests.support.cli import refuse_connections, serve
from workflows.models import ResolveAnswer, ResolveRequest

AT = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


class ResolvingClient(FakeClient):
    """FakeClient that records resolutions and answers with ``answer``."""

    def __init__(self) -> None:
        super().__init__()
        self.resolved: list[tuple[str, ResolveRequest]] = []
        self.answer = ResolveAnswer(state=RefundState.CANCELED, note="closed as CANCELED")

    async def resolve(self, key: str, request: ResolveRequest) -> ResolveAnswer:
        self._fail()
        self.resolved.append((key, request))
        return self.answer


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> ResolvingClient:
    return serve(monkeypatch, ResolvingClient())


@pytest.fixture
def no_server(monkeypatch: pytest.MonkeyPatch) -> None:
    refuse_connections(monkeypatch, "invalid input must not reach Temporal")


def parse(*argv: str) -> ResolveRequest:
    return build_resolution(cli.build_parser().parse_args(["resolve", "k", *argv]))


# ------------------------------------------------------------------------------- parsing


def test_each_action_becomes_its_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USER", "dana")
    adopt = parse("--adopt", " R-1 ", "--reason", "seen at the provider", "--by", "alice")
    assert adopt == ResolveRequest(
        action=ResolveAction.ADOPT, refund_id="R-1", reason="seen at the provider", by="alice"
    )
    resend = parse("--resend", "--reason", "nothing there")
    assert resend == ResolveRequest(action=ResolveAction.RESEND, reason="nothing there", by="dana")
    for value, state in (("failed", RefundState.FAILED), ("canceled", RefundState.CANCELED)):
        close = parse("--close", value, "--reason", "paid in cash")
        assert close.action is ResolveAction.CLOSE
        assert close.close_as is state
        assert close.refund_id is None


def test_by_defaults_to_user_then_operator(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USER", "  ")
    assert parse("--resend", "--reason", "r").by == "operator"
    monkeypatch.delenv("USER")
    assert parse("--resend", "--reason", "r").by == "operator"


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--resend", "--reason", "  "], "invalid --reason: must not be blank"),
        (["--resend", "--reason", "r", "--by", " "], "invalid --by: must not be blank"),
        (["--adopt", " ", "--reason", "r"], "invalid --adopt: needs the provider refund id"),
        (["--adopt", "R" * 101, "--reason", "r"], "invalid resolution: --adopt: String should"),
        (["--resend", "--reason", "r" * 501], "invalid resolution: --reason: String should"),
    ],
)
@pytest.mark.usefixtures("no_server")
def test_bad_values_exit_2_naming_the_flag(
    argv: list[str], fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.run(["resolve", "k", *argv]) == 2
    assert fragment in one_error_line(capsys)


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--reason", "r"], "one of the arguments --adopt --resend --close is required"),
        (["--resend", "--close", "failed", "--reason", "r"], "not allowed with argument"),
        (["--close", "lost", "--reason", "r"], "invalid choice: 'lost'"),
        (["--resend"], "the following arguments are required: --reason"),
    ],
)
@pytest.mark.usefixtures("no_server")
def test_usage_errors_exit_2(
    argv: list[str], fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.run(["resolve", "k", *argv]) == 2
    line = one_error_line(capsys)
    assert line.startswith("refunds: error: ")
    assert line.endswith("(see `refunds resolve --help`)")
    assert fragment in line


# ------------------------------------------------------------------------------ running


def test_prints_the_note_and_the_state(
    fake: ResolvingClient, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["resolve", "order-1", "--close", "canceled", "--reason", "paid", "--by", "bob"]
    assert cli.run(argv) == 0
    assert capsys.readouterr().out.splitlines() == [
        "resolved refund 'order-1' (close by bob): closed as CANCELED",
        "state now CANCELED",
    ]
    [(key, request)] = fake.resolved
    assert key == "order-1"
    assert request.close_as is RefundState.CANCELED


def test_a_refund_still_running_says_how_to_follow_it(
    fake: ResolvingClient, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.answer = ResolveAnswer(state=RefundState.SUBMITTING, note="declared that none was made")
    assert cli.run(["resolve", "order-1", "--resend", "--reason", "r", "--by", "bob"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "resolved refund 'order-1' (resend by bob): declared that none was made",
        "state now SUBMITTING",
        "follow it with `refunds status order-1`",
    ]


def test_json_is_the_answer(fake: ResolvingClient, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.run(["resolve", "order-1", "--adopt", "R1", "--reason", "r", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "state": "CANCELED",
        "note": "closed as CANCELED",
    }


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (ResolutionRefusedError("refund 'order-1': nothing to resolve: already SUCCEEDED"), 1),
        (RefundNotFoundError("no refund with key 'order-1'"), 4),
    ],
)
def test_refusals_exit_non_zero_with_the_reason(
    fake: ResolvingClient, capsys: pytest.CaptureFixture[str], error: Exception, code: int
) -> None:
    fake.error = error
    assert cli.run(["resolve", "order-1", "--resend", "--reason", "r"]) == code
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip() == f"refunds: error: {error}"


# ------------------------------------------------------------------- status for people


def attention_status() -> RefundStatus:
    return status_of("order-1", RefundState.NEEDS_ATTENTION).model_copy(
        update={
            "provider_refund_id": None,
            "provider_status": None,
            "attention_reason": "could not look up what the lost answer made",
            "attention_actions": "resolve it: adopt, resend or close",
        }
    )


def fields(status: RefundStatus) -> dict[str, list[str]]:
    shown: dict[str, list[str]] = {}
    for line in output.render_status(status).splitlines():
        label, _, value = line.partition("  ")
        shown.setdefault(label, []).append(value.strip())
    return shown


def test_status_shows_the_attention_and_what_to_do() -> None:
    shown = fields(attention_status())
    assert shown["state"] == ["NEEDS_ATTENTION"]
    assert shown["attention"] == ["could not look up what the lost answer made"]
    assert shown["what to do"] == ["resolve it: adopt, resend or close"]
    assert "resolution" not in shown
    assert "confirmed" not in shown


def test_status_shows_each_resolution_who_when_what_why() -> None:
    status = attention_status().model_copy(
        update={
            "state": RefundState.FAILED,
            "attention_actions": None,
            "resolutions": [
                Resolution(
                    action=ResolveAction.ADOPT,
                    reason="seen in Mews",
                    by="alice",
                    at=AT,
                    refund_id="R1",
                    outcome="adopted provider refund R1 (12.34 PLN)",
                ),
                Resolution(
                    action=ResolveAction.CLOSE,
                    reason="gave up",
                    at=AT,
                    close_as=RefundState.FAILED,
                    outcome="closed as FAILED",
                ),
            ],
        }
    )
    shown = fields(status)
    assert shown["resolution"] == [
        "2025-01-02T03:04:05+00:00 adopt by alice: adopted provider refund R1 (12.34 PLN) "
        "(reason: seen in Mews)",
        "2025-01-02T03:04:05+00:00 close by unknown operator: closed as FAILED (reason: gave up)",
    ]
    assert "what to do" not in shown


def test_confirmed_money_with_and_without_a_currency() -> None:
    stated = status_of("order-1").model_copy(
        update={"confirmed_amount_minor": 1234, "confirmed_currency": "PLN"}
    )
    assert fields(stated)["confirmed"] == ["12.34 PLN"]
    assert "split" not in fields(stated)

    # Paynow states no currency for a refund: the amount is shown in the payment's units.
    unstated = status_of("order-1").model_copy(
        update={
            "confirmed_amount_minor": 1234,
            "payer_amount_minor": 1000,
            "voucher_amount_minor": 234,
        }
    )
    shown = fields(unstated)
    assert shown["confirmed"] == ["12.34 (currency not stated by the provider)"]
    assert shown["split"] == ["payer 10.00, voucher 2.34 (currency not stated by the provider)"]
    with_currency = unstated.model_copy(update={"confirmed_currency": "PLN"})
    assert fields(with_currency)["split"] == ["payer 10.00 PLN, voucher 2.34 PLN"]

    nothing_known = unstated.model_copy(update={"currency": None, "amount_minor": None})
    assert fields(nothing_known)["confirmed"] == [
        "1234 minor units (currency not stated by the provider)"
    ]


def test_status_json_carries_the_new_fields() -> None:
    status = attention_status()
    dumped = json.loads(output.to_json(status))
    assert dumped["attention_actions"] == "resolve it: adopt, resend or close"
    assert dumped["resolutions"] == []
    assert dumped["confirmed_amount_minor"] is None
