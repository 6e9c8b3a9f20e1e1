"""The provider error tree: status table, retry flags, and messages that never leak secrets."""

from __future__ import annotations

import inspect

import pytest

from providers import errors
from providers.errors import (
    AmountExceedsRefundableError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    ForbiddenError,
    InsufficientBalanceError,
    InvalidRequestError,
    NotFoundError,
    PaymentNotRefundableError,
    ProviderConnectError,
    ProviderError,
    ProviderStatusError,
    ProviderTransportError,
    ProviderValidationError,
    RateLimitedError,
    RefundNotCancellableError,
    RequestTimeoutError,
    ServerError,
    Step,
    Subject,
    UnknownOutcomeError,
    class_for_status,
    operator_sentence,
    redact,
)

# The tree drawn in the module docstring: class -> (parent, retryable, outcome_unknown).
TREE: dict[type[ProviderError], tuple[type[Exception], bool, bool]] = {
    ProviderError: (Exception, False, False),
    InvalidRequestError: (ProviderError, False, False),
    ProviderTransportError: (ProviderError, True, False),
    ProviderConnectError: (ProviderTransportError, True, False),
    UnknownOutcomeError: (ProviderTransportError, True, True),
    ProviderStatusError: (ProviderError, False, False),
    BadRequestError: (ProviderStatusError, False, False),
    ProviderValidationError: (BadRequestError, False, False),
    AuthenticationError: (ProviderStatusError, False, False),
    ForbiddenError: (ProviderStatusError, False, False),
    NotFoundError: (ProviderStatusError, False, False),
    RequestTimeoutError: (ProviderStatusError, True, True),
    ConflictError: (ProviderStatusError, True, False),
    RateLimitedError: (ProviderStatusError, True, False),
    ServerError: (ProviderStatusError, True, True),
    PaymentNotRefundableError: (ProviderStatusError, False, False),
    AmountExceedsRefundableError: (ProviderStatusError, False, False),
    InsufficientBalanceError: (ProviderStatusError, False, False),
    RefundNotCancellableError: (ProviderStatusError, False, False),
}


def make_error(cls: type[ProviderError], message: str = "went wrong") -> ProviderError:
    if issubclass(cls, ProviderStatusError):
        return cls(message, provider="paynow", status_code=418, request_id="rid-1")
    return cls(message, provider="mews", request_id="rid-1")


def all_error_classes() -> set[type[ProviderError]]:
    found: set[type[ProviderError]] = set()
    pending: list[type[ProviderError]] = [ProviderError]
    while pending:
        cls = pending.pop()
        found.add(cls)
        pending.extend(cls.__subclasses__())
    return {cls for cls in found if cls.__module__ == errors.__name__}


def test_table_covers_the_whole_tree() -> None:
    assert all_error_classes() == set(TREE)
    exported = {
        obj
        for _, obj in inspect.getmembers(errors, inspect.isclass)
        if issubclass(obj, ProviderError)
    }
    assert exported == set(TREE)


def test_docstring_draws_every_class() -> None:
    doc = errors.__doc__ or ""
    for cls in TREE:
        assert cls.__name__ in doc


@pytest.mark.parametrize(("cls", "expected"), list(TREE.items()), ids=lambda v: str(v))
def test_parent_and_flags(
    cls: type[ProviderError], expected: tuple[type[Exception], bool, bool]
) -> None:
    parent, retryable, outcome_unknown = expected
    assert cls.__bases__ == (parent,)
    assert cls.retryable is retryable
    assert cls.outcome_unknown is outcome_unknown
    instance = make_error(cls)
    assert instance.retryable is retryable
    assert instance.outcome_unknown is outcome_unknown


def test_codes_are_unique_snake_case() -> None:
    codes = [cls.code for cls in TREE]
    assert len(set(codes)) == len(codes)
    for code in codes:
        assert code == code.lower()
        assert " " not in code


def test_outcome_unknown_only_where_a_write_may_have_happened() -> None:
    unknown = {cls for cls in TREE if cls.outcome_unknown}
    assert unknown == {UnknownOutcomeError, RequestTimeoutError, ServerError}
    # Whatever may have happened may also be retried (with an idempotency key, or after a look).
    assert all(cls.retryable for cls in unknown)


# --- class_for_status --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, BadRequestError),
        (401, AuthenticationError),
        (403, ForbiddenError),
        (404, NotFoundError),
        (408, RequestTimeoutError),
        (409, ConflictError),
        (429, RateLimitedError),
    ],
)
def test_documented_statuses(status: int, cls: type[ProviderStatusError]) -> None:
    assert class_for_status(status) is cls


@pytest.mark.parametrize("status", range(500, 600))
def test_every_5xx_is_a_server_error(status: int) -> None:
    assert class_for_status(status) is ServerError


@pytest.mark.parametrize("status", [402, 405, 406, 410, 411, 413, 415, 418, 422, 451, 499])
def test_unknown_4xx_is_the_base_status_error(status: int) -> None:
    cls = class_for_status(status)
    assert cls is ProviderStatusError
    assert not cls.retryable
    assert not cls.outcome_unknown


def test_status_classes_keep_their_fields() -> None:
    body = {"statusCode": 429, "errors": [{"errorType": "TOO_MANY", "message": "slow down"}]}
    error = class_for_status(429)(
        "slow down",
        provider="paynow",
        status_code=429,
        request_id="rid-9",
        retry_after=12.0,
        body=body,
        provider_code="TOO_MANY",
    )
    assert isinstance(error, RateLimitedError)
    assert error.status_code == 429
    assert error.retry_after == 12.0
    assert error.provider_code == "TOO_MANY"
    assert error.body == body
    body["statusCode"] = 500
    assert error.body is not None
    assert error.body["statusCode"] == 429  # a copy, not the caller's dict
    assert ServerError("x", provider="mews", status_code=502).body is None


# --- text: useful, and never a credential ------------------------------------------------------


def test_base_error_text() -> None:
    error = ProviderConnectError(
        "Could not reach Mews.", provider="mews", request_id="rid-7", detail="ConnectError: no"
    )
    assert str(error) == "Could not reach Mews. Detail (request id rid-7): ConnectError: no."
    assert repr(error) == (
        "ProviderConnectError(provider='mews', message='Could not reach Mews.', "
        "detail='ConnectError: no', request_id='rid-7', retry_after=None)"
    )
    assert error.message == "Could not reach Mews."
    assert error.args == ("Could not reach Mews.",)


def test_base_error_text_without_detail_or_request_id() -> None:
    error = InvalidRequestError("amount must be positive", provider="paynow")
    assert str(error) == "amount must be positive"
    assert "request id" not in str(error)


def test_status_error_text_is_the_sentence_then_the_providers_words_once() -> None:
    error = ProviderValidationError(
        "Paynow found the refund invalid: correct it.",
        provider="paynow",
        status_code=400,
        request_id="req-42",
        provider_code="VALIDATION_ERROR",
        detail="VALIDATION_ERROR: amount: must be positive",
    )
    assert str(error) == (
        "Paynow found the refund invalid: correct it. Paynow said (HTTP 400, request id "
        "req-42): VALIDATION_ERROR: amount: must be positive."
    )
    assert str(error).count("VALIDATION_ERROR") == 1
    text = repr(error)
    assert text.startswith("ProviderValidationError(")
    assert "status_code=400" in text
    assert "'VALIDATION_ERROR'" in text
    assert "'VALIDATION_ERROR: amount: must be positive'" in text
    assert "'req-42'" in text


def test_status_error_text_without_detail_or_request_id() -> None:
    error = ServerError("Mews failed.", provider="mews", status_code=503)
    assert str(error) == "Mews failed. Mews answered (HTTP 503)."


def test_a_verdict_on_a_success_answer_shows_no_http_status() -> None:
    """The issue's "HTTP 200 PENDING": a 200 answer that says no is not an HTTP error."""
    error = PaymentNotRefundableError(
        "Paynow cannot refund payment P.",
        provider="paynow",
        status_code=200,
        request_id="r-1",
        provider_code="PENDING",
        detail="payment status PENDING",
    )
    assert str(error) == (
        "Paynow cannot refund payment P. Paynow said (request id r-1): payment status PENDING."
    )
    assert "HTTP" not in str(error)


# --- the operator's sentence: by class, with the call's subject ---------------------------------

PAYMENT = Subject(
    "paynow", Step.SUBMIT, payment_id="NOLV-8F9-08K-WGD", amount_minor=9000, currency="PLN"
)


@pytest.mark.parametrize(
    ("cls", "about", "expected"),
    [
        (
            NotFoundError,
            Subject("paynow", Step.CHECK, payment_id="NOLV-8F9-08K-WGD"),
            "Paynow does not know payment NOLV-8F9-08K-WGD: check the payment id.",
        ),
        (
            NotFoundError,
            Subject("mews", Step.STATUS, payment_id="p-1", refund_id="r-1"),
            "Mews does not know refund r-1: check it at Mews; the refund of payment p-1 may "
            "need an operator.",
        ),
        (
            AmountExceedsRefundableError,
            PAYMENT,
            "Paynow refused the refund of 90.00 PLN on payment NOLV-8F9-08K-WGD: it is more "
            "than is left to refund on the payment; check the payment's earlier refunds and "
            "ask for at most what is left.",
        ),
        (
            ForbiddenError,
            Subject("mews", Step.SUBMIT, payment_id="p-1"),
            "Mews refused the refund of the whole payment p-1 under one of its business "
            "rules: see its reason below; sending it again unchanged will not help.",
        ),
        (
            InsufficientBalanceError,
            PAYMENT,
            "Paynow refused the refund of 90.00 PLN on payment NOLV-8F9-08K-WGD: the "
            "merchant balance at Paynow is too low; top it up, then start the refund again.",
        ),
        (
            ServerError,
            PAYMENT,
            "Paynow failed with a server error on the refund of 90.00 PLN on payment "
            "NOLV-8F9-08K-WGD: it is tried again automatically; nothing to do unless it lasts.",
        ),
        (
            UnknownOutcomeError,
            Subject("mews", Step.STATUS, refund_id="r-1"),
            "Mews did not answer the status read of refund r-1 after it was sent: it is tried "
            "again automatically; nothing to do unless it lasts.",
        ),
        (
            AuthenticationError,
            Subject("mews", Step.FIND, account_id="a-1"),
            "Mews refused our credentials on the lookup of refunds on account a-1: check the "
            "worker's Mews credentials.",
        ),
    ],
)
def test_operator_sentence(cls: type[ProviderError], about: Subject, expected: str) -> None:
    assert operator_sentence(cls, about) == expected


def test_rate_limited_sentence_says_when_it_is_tried_again() -> None:
    about = Subject("paynow", Step.STATUS, refund_id="R1")
    assert operator_sentence(RateLimitedError, about, retry_after=7.0) == (
        "Paynow is limiting how often we call it (the status read of refund R1): it is "
        "tried again after the 7 s it asked for."
    )
    assert operator_sentence(RateLimitedError, about).endswith(
        "it is tried again with a growing pause."
    )


@pytest.mark.parametrize("cls", list(TREE))
def test_every_class_has_a_sentence_naming_the_provider(cls: type[ProviderError]) -> None:
    sentence = operator_sentence(cls, PAYMENT)
    assert "Paynow" in sentence
    assert sentence.endswith(".")
    assert "9000" not in sentence  # amounts in major units only


@pytest.mark.parametrize("cls", list(TREE))
def test_a_redacted_secret_never_reaches_the_error(cls: type[ProviderError]) -> None:
    secret = "c0ffee-access-token-1234"
    provider_text = f'Invalid AccessToken "{secret}" for client; retry with {secret}'
    error = make_error(cls, redact(provider_text, [secret]))
    for text in (str(error), repr(error), error.message, *map(str, error.args)):
        assert secret not in text
        assert "***" in text
    assert "rid-1" in str(error)
    assert "rid-1" in repr(error)
    assert "Invalid AccessToken" in str(error)


# --- redact ------------------------------------------------------------------------------------


def test_redact_replaces_every_occurrence_of_every_secret() -> None:
    text = "key=AAAA-1111 sig=BBBB-2222 again AAAA-1111"
    assert redact(text, ["AAAA-1111", "BBBB-2222"]) == "key=*** sig=*** again ***"


def test_redact_accepts_any_iterable() -> None:
    secrets = (s for s in ["token-one", "token-two"])
    assert redact("token-one token-two", secrets) == "*** ***"


@pytest.mark.parametrize("secret", ["", "a", "ab", "abc"])
def test_redact_ignores_empty_and_short_secrets(secret: str) -> None:
    text = "a cab of abc and abcd"
    assert redact(text, [secret]) == text


def test_redact_starts_at_four_characters() -> None:
    assert redact("a cab of abcd", ["abcd"]) == "a cab of ***"


def test_redact_without_secrets_is_the_identity() -> None:
    assert redact("nothing to hide", []) == "nothing to hide"
