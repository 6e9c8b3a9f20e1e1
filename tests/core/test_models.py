"""The provider-neutral models: validation, identity, and the trip through Temporal's JSON."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from core.models import (
    FINAL_STATES,
    WORKFLOW_ID_PREFIX,
    ProviderName,
    ProviderRefund,
    ProviderRefundStatus,
    ReasonCode,
    RefundOptions,
    RefundRequest,
    RefundState,
    RefundStatus,
    Transfer,
    workflow_id_for,
)
from core.money import MAX_MINOR_UNITS, Money


def request_fields(**overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "idempotency_key": "order-1234:refund.1",
        "provider": "paynow",
        "payment_id": "NOLV-8F9-08K-WGD",
        "amount_minor": 1234,
        "currency": "PLN",
        "reason": "Customer returned the goods",
    }
    fields.update(overrides)
    return fields


def make_request(**overrides: Any) -> RefundRequest:
    return RefundRequest.model_validate(request_fields(**overrides))


def full_request_fields() -> dict[str, Any]:
    """Every field set, none at its default."""
    return request_fields(
        account_id="acc-1",
        enterprise_id="ent-1",
        reason_code="RMA",
        transfers=[{"seller_id": "seller-1", "gross_amount_minor": 1000, "fee_amount_minor": 50}],
        requester="alice@example.com",
        metadata={"ticket": "T-1", "channel": "support"},
        merchant="shop_pl-2",
        notify_url="https://hooks.example.com/refunds",
    )


# --- RefundRequest validation ------------------------------------------------------------------


def test_minimal_request_and_its_defaults() -> None:
    request = RefundRequest.model_validate(
        {"idempotency_key": "k", "provider": "mews", "payment_id": "p", "reason": "r"}
    )
    assert request.provider is ProviderName.MEWS
    assert request.amount_minor is None
    assert request.currency is None
    assert request.money is None
    assert request.account_id is None
    assert request.enterprise_id is None
    assert request.reason_code is None
    assert request.transfers == ()
    assert request.requester is None
    assert request.metadata == {}
    assert request.merchant == "default"


def test_full_request_parses_nested_types() -> None:
    request = RefundRequest.model_validate(full_request_fields())
    assert request.reason_code is ReasonCode.RMA
    assert request.transfers == (
        Transfer(seller_id="seller-1", gross_amount_minor=1000, fee_amount_minor=50),
    )
    assert request.money == Money(amount_minor=1234, currency="PLN")


@pytest.mark.parametrize(
    "key",
    [
        "a",
        "A" * 45,
        "0123456789",
        "order-1234:refund.1",
        "a_b-c.d:e",
        "d243fdb3-c287-484a-bb9c-58536f2794c1",
    ],
)
def test_idempotency_key_accepted(key: str) -> None:
    assert make_request(idempotency_key=key).idempotency_key == key


@pytest.mark.parametrize(
    "key",
    [
        "",
        "A" * 46,
        "has space",
        " leading",
        "trailing ",
        "line\nbreak",
        "trailing-newline\n",
        "slash/key",
        "plus+key",
        "zażółć",
        "emoji-\U0001f4b8",
        "tab\tkey",
    ],
)
def test_idempotency_key_refused(key: str) -> None:
    with pytest.raises(ValidationError, match="idempotency_key"):
        make_request(idempotency_key=key)


@pytest.mark.parametrize("key", [None, 123])
def test_idempotency_key_must_be_a_string(key: Any) -> None:
    with pytest.raises(ValidationError, match="idempotency_key"):
        make_request(idempotency_key=key)


def test_amount_without_currency_is_refused() -> None:
    with pytest.raises(ValidationError, match="amount_minor and currency go together"):
        make_request(currency=None)


def test_currency_without_amount_is_refused() -> None:
    with pytest.raises(ValidationError, match="amount_minor and currency go together"):
        make_request(amount_minor=None)


def test_neither_amount_nor_currency_means_whole_payment() -> None:
    request = make_request(provider="mews", amount_minor=None, currency=None)
    assert request.money is None


@pytest.mark.parametrize("amount", [0, -5, MAX_MINOR_UNITS + 1, True, 12.0, "1234", 12.5], ids=repr)
def test_amount_must_be_a_positive_strict_int(amount: Any) -> None:
    with pytest.raises(ValidationError, match="amount_minor"):
        make_request(amount_minor=amount)


@pytest.mark.parametrize("currency", ["pln", "XYZ", "PL", "PLNN"])
def test_currency_must_be_a_known_code(currency: str) -> None:
    with pytest.raises(ValidationError, match="currency"):
        make_request(currency=currency)


@pytest.mark.parametrize("reason", ["", " ", "   \t\n"])
def test_blank_reason_is_refused(reason: str) -> None:
    with pytest.raises(ValidationError, match="reason"):
        make_request(reason=reason)


def test_reason_length_limit() -> None:
    assert len(make_request(reason="x" * 500).reason) == 500
    with pytest.raises(ValidationError, match="reason"):
        make_request(reason="x" * 501)


def test_unknown_provider_is_refused() -> None:
    with pytest.raises(ValidationError, match="provider"):
        make_request(provider="stripe")


@pytest.mark.parametrize("merchant", ["", "Shop", "shop pl", "shop/pl", "x" * 65])
def test_merchant_profile_name_is_constrained(merchant: str) -> None:
    with pytest.raises(ValidationError, match="merchant"):
        make_request(merchant=merchant)


def test_extra_fields_are_refused() -> None:
    with pytest.raises(ValidationError, match="extra"):
        make_request(api_key="secret-that-must-not-travel")


def test_aliases_are_not_read() -> None:
    # Models that travel through Temporal have no aliases: a camelCase name is just extra.
    fields = request_fields()
    fields["idempotencyKey"] = fields.pop("idempotency_key")
    with pytest.raises(ValidationError):
        RefundRequest.model_validate(fields)


def test_request_is_frozen() -> None:
    request = make_request()
    with pytest.raises(ValidationError, match="frozen"):
        request.amount_minor = 1  # type: ignore[misc]
    assert request.amount_minor == 1234


def test_requests_compare_by_value() -> None:
    assert make_request() == make_request()
    assert make_request() != make_request(amount_minor=1)


def test_metadata_limits() -> None:
    assert len(make_request(metadata={f"k{i}": "v" for i in range(32)}).metadata) == 32
    with pytest.raises(ValidationError, match="metadata"):
        make_request(metadata={f"k{i}": "v" for i in range(33)})
    with pytest.raises(ValidationError, match="metadata"):
        make_request(metadata={"k" * 65: "v"})
    with pytest.raises(ValidationError, match="metadata"):
        make_request(metadata={"k": "v" * 501})


@pytest.mark.parametrize(
    "transfer",
    [
        {"seller_id": "", "gross_amount_minor": 1, "fee_amount_minor": 0},
        {"seller_id": "s" * 16, "gross_amount_minor": 1, "fee_amount_minor": 0},
        {"seller_id": "s", "gross_amount_minor": -1, "fee_amount_minor": 0},
        {"seller_id": "s", "gross_amount_minor": 100_000_001, "fee_amount_minor": 0},
        {"seller_id": "s", "gross_amount_minor": 1, "fee_amount_minor": 1.0},
        {"seller_id": "s", "gross_amount_minor": 1, "fee_amount_minor": 0, "extra": 1},
    ],
)
def test_transfer_validation(transfer: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="transfers"):
        make_request(transfers=[transfer])


# --- identity: workflow id and fingerprint -----------------------------------------------------


def test_workflow_id_is_derived_from_the_key_alone() -> None:
    assert WORKFLOW_ID_PREFIX == "refund:"
    assert workflow_id_for("abc") == "refund:abc"
    assert make_request(idempotency_key="order-7").workflow_id == "refund:order-7"
    assert (
        make_request(idempotency_key="k1", amount_minor=1).workflow_id
        == make_request(idempotency_key="k1", amount_minor=2).workflow_id
    )


def test_fingerprint_is_a_sha256_hex_digest() -> None:
    digest = make_request().fingerprint()
    assert len(digest) == 64
    assert int(digest, 16) >= 0


def test_fingerprint_ignores_field_order_and_construction_path() -> None:
    fields = full_request_fields()
    reordered = dict(reversed(list(fields.items())))
    reordered["metadata"] = dict(reversed(list(fields["metadata"].items())))
    by_dict = RefundRequest.model_validate(fields)
    by_reordered_dict = RefundRequest.model_validate(reordered)
    by_json = RefundRequest.model_validate_json(by_dict.model_dump_json())
    by_kwargs = RefundRequest(
        notify_url="https://hooks.example.com/refunds",
        merchant="shop_pl-2",
        metadata={"channel": "support", "ticket": "T-1"},
        requester="alice@example.com",
        transfers=(Transfer(seller_id="seller-1", gross_amount_minor=1000, fee_amount_minor=50),),
        reason_code=ReasonCode.RMA,
        reason="Customer returned the goods",
        currency="PLN",
        amount_minor=1234,
        enterprise_id="ent-1",
        account_id="acc-1",
        payment_id="NOLV-8F9-08K-WGD",
        provider=ProviderName.PAYNOW,
        idempotency_key="order-1234:refund.1",
    )
    fingerprints = {r.fingerprint() for r in (by_dict, by_reordered_dict, by_json, by_kwargs)}
    assert len(fingerprints) == 1


def test_fingerprint_counts_defaults_the_same_as_explicit_values() -> None:
    implicit = make_request()
    explicit = make_request(
        account_id=None, transfers=[], metadata={}, merchant="default", reason_code=None
    )
    assert implicit.fingerprint() == explicit.fingerprint()


def test_a_field_added_later_with_a_default_keeps_the_fingerprint() -> None:
    """Issue 9: a later version adding a defaulted field must not turn an identical retry
    into an idempotency conflict."""

    class LaterRequest(RefundRequest):
        priority: int = 0

    now = make_request()
    later = LaterRequest(**now.model_dump())
    assert later.fingerprint() == now.fingerprint()
    assert LaterRequest(**now.model_dump(), priority=1).fingerprint() != now.fingerprint()


@pytest.mark.parametrize(
    ("field", "other"),
    [
        ("idempotency_key", "another-key"),
        ("provider", "mews"),
        ("payment_id", "NOLV-8F9-08K-WGE"),
        ("account_id", "acc-2"),
        ("enterprise_id", "ent-2"),
        ("amount_minor", 1235),
        ("currency", "EUR"),
        ("reason", "Customer returned the goods!"),
        ("reason_code", "OTHER"),
        (
            "transfers",
            [{"seller_id": "seller-1", "gross_amount_minor": 1000, "fee_amount_minor": 51}],
        ),
        ("requester", "bob@example.com"),
        ("metadata", {"ticket": "T-2", "channel": "support"}),
        ("merchant", "shop_pl-3"),
        ("notify_url", "https://hooks.example.com/refunds/2"),
    ],
)
def test_fingerprint_changes_when_any_field_changes(field: str, other: Any) -> None:
    base = RefundRequest.model_validate(full_request_fields())
    changed_fields = full_request_fields()
    changed_fields[field] = other
    changed = RefundRequest.model_validate(changed_fields)
    assert changed != base
    assert changed.fingerprint() != base.fingerprint()


def test_fingerprint_covers_every_field() -> None:
    # A new field must be added to the parametrized list above, or the test would prove less.
    assert set(RefundRequest.model_fields) == set(full_request_fields())


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://hooks.example.com/x", "http:// or https://"),
        ("https://user:pw@hooks.example.com/x", "credentials"),
        ("https:///x", "no host"),
        ("https://hooks.example.com/x#frag", "fragment"),
        ("https://hooks.example.com:0/x", "port 0"),
        ("https://hooks.example.com:99999/x", "not a valid URL"),
    ],
)
def test_a_notify_url_that_cannot_be_used_is_refused_offline(url: str, why: str) -> None:
    with pytest.raises(ValidationError, match=why) as refused:
        make_request(notify_url=url)
    assert refused.value.errors()[0]["loc"] == ("notify_url",)


def test_amount_and_currency_both_absent_changes_the_fingerprint() -> None:
    assert (
        make_request(amount_minor=None, currency=None).fingerprint() != make_request().fingerprint()
    )


# --- RefundOptions -----------------------------------------------------------------------------


def test_refund_options_defaults() -> None:
    options = RefundOptions()
    assert options.poll_initial_s == 5.0
    assert options.poll_max_s == 300.0
    assert options.attention_after_s == 48 * 3600.0
    assert options.checks_per_run == 500


def test_poll_max_may_equal_poll_initial() -> None:
    options = RefundOptions(poll_initial_s=7.0, poll_max_s=7.0)
    assert options.poll_max_s == options.poll_initial_s


def test_poll_max_below_poll_initial_is_refused() -> None:
    with pytest.raises(ValidationError, match="poll_max_s must be >= poll_initial_s"):
        RefundOptions(poll_initial_s=10.0, poll_max_s=9.5)


@pytest.mark.parametrize(
    "fields",
    [
        {"poll_initial_s": 0},
        {"poll_initial_s": -1},
        {"poll_initial_s": 86_401, "poll_max_s": 90_000},
        {"poll_max_s": 7 * 86_400 + 1},
        {"attention_after_s": 0},
        {"checks_per_run": 9},
        {"checks_per_run": 5_001},
        {"unknown": 1},
    ],
)
def test_refund_options_bounds(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        RefundOptions.model_validate(fields)


# --- JSON round trips (the pydantic data converter's path) -------------------------------------


def test_refund_request_json_round_trip() -> None:
    request = RefundRequest.model_validate(full_request_fields())
    dumped = request.model_dump(mode="json")
    assert dumped["provider"] == "paynow"
    assert dumped["reason_code"] == "RMA"
    assert dumped["transfers"] == [
        {"seller_id": "seller-1", "gross_amount_minor": 1000, "fee_amount_minor": 50}
    ]
    back = RefundRequest.model_validate(dumped)
    assert back == request
    assert back.fingerprint() == request.fingerprint()
    assert RefundRequest.model_validate_json(request.model_dump_json()) == request


def test_refund_request_json_uses_field_names_only() -> None:
    dumped = make_request().model_dump(mode="json")
    assert set(dumped) == set(RefundRequest.model_fields)


def test_refund_options_json_round_trip() -> None:
    options = RefundOptions(poll_initial_s=0.5, poll_max_s=60.0, checks_per_run=10)
    assert RefundOptions.model_validate(options.model_dump(mode="json")) == options


def test_refund_status_json_round_trip() -> None:
    started = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    status = RefundStatus(
        key="order-7",
        workflow_id=workflow_id_for("order-7"),
        provider=ProviderName.MEWS,
        payment_id="p-1",
        state=RefundState.PENDING,
        amount_minor=1234,
        currency="EUR",
        provider_refund_id="r-1",
        provider_status="Pending",
        attempts=2,
        next_check_at=datetime(2024, 5, 1, 12, 5, tzinfo=UTC),
        started_at=started,
        updated_at=started,
    )
    dumped = status.model_dump(mode="json")
    assert dumped["state"] == "PENDING"
    assert dumped["started_at"] == "2024-05-01T12:00:00Z"
    back = RefundStatus.model_validate(dumped)
    assert back == status
    assert back.started_at == started


def test_provider_refund_json_round_trip() -> None:
    refund = ProviderRefund(
        refund_id="R-1",
        status=ProviderRefundStatus.FAILED,
        raw_status="FAILED",
        amount_minor=100,
        currency="PLN",
        failure_reason="CARD_BALANCE_ERROR",
        created_at=datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
    )
    assert ProviderRefund.model_validate(refund.model_dump(mode="json")) == refund


# --- states ------------------------------------------------------------------------------------


def test_final_states() -> None:
    assert {
        RefundState.SUCCEEDED,
        RefundState.FAILED,
        RefundState.CANCELED,
        RefundState.REJECTED,
    } == FINAL_STATES


@pytest.mark.parametrize("state", list(RefundState))
def test_refund_status_is_final(state: RefundState) -> None:
    status = RefundStatus(
        key="k", workflow_id="refund:k", provider=ProviderName.PAYNOW, payment_id="p", state=state
    )
    assert status.is_final is (state in FINAL_STATES)
    not_final = {
        RefundState.VALIDATING,
        RefundState.SUBMITTING,
        RefundState.PENDING,
        RefundState.NEEDS_ATTENTION,
    }
    assert status.is_final is (state not in not_final)


def test_refund_status_ignores_fields_a_newer_version_added() -> None:
    # The status travels between versions (query answers, results): an unknown field is
    # dropped, never kept and never an error. Callers' inputs stay strict (above).
    status = RefundStatus.model_validate(
        {
            "key": "k",
            "workflow_id": "refund:k",
            "provider": "paynow",
            "payment_id": "p",
            "state": "PENDING",
            "added_later": "x",
        }
    )
    assert status.state is RefundState.PENDING
    assert "added_later" not in status.model_dump()
