"""What the steps of `RefundWorkflow` come to, besides their results: small immutable values.

Kept out of ``workflows.refund`` and imported passed through: the sandbox runs a workflow's
own module again for every workflow it loads, and building these classes (dataclasses, an
enum) was a good part of that cost (docs/performance.md, "Worker CPU"). They hold no state.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from temporalio.exceptions import ApplicationError

from activities.models import SubmittedRefund
from core.models import ProviderRefund, RefundState


# What one activity call came to, besides its result (see `_call_once`).
@dataclass(frozen=True)
class Final:
    """A non-retryable failure from an activity: the step's answer is "no"."""

    error: ApplicationError


@dataclass(frozen=True)
class BudgetSpent:
    """The call's budget ran out (maybe mid-call); its last error is noted in the status."""


# What one submit call came to.
@dataclass(frozen=True)
class Accepted:
    submitted: SubmittedRefund


@dataclass(frozen=True)
class Refused:
    message: str


@dataclass(frozen=True)
class Unknown:
    message: str


class Lookup(Enum):
    """What reconciliation came to when it adopted nothing."""

    NONE_MADE = "sure that nothing was made"
    UNRESOLVED = "cannot tell: an operator decides"


# An operator's decision, handed from the `resolve` handler to the main flow.
@dataclass(frozen=True)
class Resend:
    pass


@dataclass(frozen=True)
class Close:
    state: RefundState
    message: str


Decision = ProviderRefund | Resend | Close
