"""From flags to what `refunds start` and `refunds resolve` send: a RefundRequest (amounts in
major units, transfers, metadata), a ResolveRequest, and the trace to continue. Everything
here is offline; a value that cannot be used raises InputError naming its flag (exit 2)."""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from cli.runner import InputError, describe_validation
from core.models import RefundRequest, RefundState, ResolveAction
from core.money import MoneyError, exponent, parse_major
from telemetry.tracing import parent_context
from workflows.models import ResolveRequest

# `refunds resolve --close` values and the state each ends the refund in.
CLOSE_AS = {"failed": RefundState.FAILED, "canceled": RefundState.CANCELED}

# ResolveRequest fields as `refunds resolve` spells them.
FLAG_OF_RESOLVE_FIELD = {
    "refund_id": "--adopt",
    "close_as": "--close",
    "reason": "--reason",
    "by": "--by",
}

DEFAULT_OPERATOR = "operator"

# The OpenTelemetry convention for handing a trace to a child process through its environment.
TRACEPARENT_ENV = "TRACEPARENT"

_ZERO = re.compile(r"^0+(\.0*)?$")


def parse_amount(text: str, currency: str, *, flag: str, allow_zero: bool = False) -> int:
    """Minor units of ``text`` (major units of ``currency``); refuses anything inexact."""
    if allow_zero and _ZERO.match(text.strip()):
        return 0
    try:
        return parse_major(text, currency)
    except MoneyError as err:
        raise InputError(flag, str(err)) from None


def parse_transfer(spec: str, currency: str | None) -> dict[str, Any]:
    """``SELLER:GROSS:FEE`` (amounts in major units of ``currency``) -> a Transfer's fields."""
    parts = spec.rsplit(":", 2)
    if len(parts) != 3 or not parts[0]:
        raise InputError(
            "--transfer", f"expected SELLER:GROSS:FEE like s1:10.00:0.50, got {spec!r}"
        )
    if currency is None:
        raise InputError("--transfer", "transfer amounts need --currency (and --amount)")
    seller, gross, fee = parts
    return {
        "seller_id": seller,
        "gross_amount_minor": parse_amount(gross, currency, flag="--transfer", allow_zero=True),
        "fee_amount_minor": parse_amount(fee, currency, flag="--transfer", allow_zero=True),
    }


def parse_meta(pairs: Sequence[str]) -> dict[str, str]:
    metadata: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise InputError("--meta", f"expected KEY=VALUE, got {pair!r}")
        metadata[name] = value
    return metadata


def build_request(args: argparse.Namespace) -> RefundRequest:
    """The request `refunds start` sends; raises InputError / ValidationError (exit 2)."""
    currency = args.currency.strip().upper() if args.currency else None
    if currency is not None:
        # An unknown code is the currency's fault, whatever the amount says.
        try:
            exponent(currency)
        except MoneyError as err:
            raise InputError("--currency", str(err)) from None
    amount_minor: int | None = None
    if args.amount is not None:
        if currency is None:
            raise InputError("--amount", "needs --currency, e.g. --amount 12.34 --currency PLN")
        amount_minor = parse_amount(args.amount, currency, flag="--amount")
    elif currency is not None:
        raise InputError("--currency", "goes with --amount (leave both out for the whole payment)")
    fields: dict[str, Any] = {
        "idempotency_key": args.key,
        "provider": args.provider,
        "payment_id": args.payment_id,
        "account_id": args.account_id,
        "enterprise_id": args.enterprise_id,
        "amount_minor": amount_minor,
        "currency": currency,
        "reason": args.reason,
        "reason_code": args.reason_code,
        "transfers": [parse_transfer(t, currency) for t in args.transfer],
        "requester": args.requester,
        "metadata": parse_meta(args.meta),
        "notify_url": args.notify_url,
    }
    return RefundRequest.model_validate(fields)


def default_operator() -> str:
    """Who resolves when --by is not given: the login name, else ``operator``."""
    return os.environ.get("USER", "").strip() or DEFAULT_OPERATOR


def build_resolution(args: argparse.Namespace) -> ResolveRequest:
    """The `resolve` update's payload from the command line; raises InputError (exit 2)."""
    if not args.reason.strip():
        raise InputError("--reason", "must not be blank: say why")
    by = default_operator() if args.by is None else args.by.strip()
    if not by:
        raise InputError("--by", "must not be blank (leave it out for $USER)")
    fields: dict[str, Any] = {"reason": args.reason, "by": by}
    if args.adopt is not None:
        refund_id = args.adopt.strip()
        if not refund_id:
            raise InputError("--adopt", "needs the provider refund id")
        fields.update(action=ResolveAction.ADOPT, refund_id=refund_id)
    elif args.resend:
        fields["action"] = ResolveAction.RESEND
    else:
        fields.update(action=ResolveAction.CLOSE, close_as=CLOSE_AS[args.close])
    try:
        return ResolveRequest.model_validate(fields)
    except ValidationError as err:
        raise InputError("resolution", describe_validation(err, FLAG_OF_RESOLVE_FIELD)) from None


def traceparent_of(args: argparse.Namespace) -> str | None:
    """The trace to continue: ``--traceparent`` (checked: a bad one is an input error), else
    ``$TRACEPARENT`` when it is a valid one (a bad inherited value only starts a new trace)."""
    if args.traceparent is not None:
        if parent_context(args.traceparent) is None:
            raise InputError(
                "--traceparent",
                f"{args.traceparent!r} is not a W3C traceparent "
                "(00-<32 hex trace id>-<16 hex span id>-<2 hex flags>)",
            )
        return str(args.traceparent)
    inherited = os.environ.get(TRACEPARENT_ENV, "").strip()
    return inherited if parent_context(inherited) is not None else None
