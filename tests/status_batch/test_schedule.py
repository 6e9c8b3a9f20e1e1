"""The batch's registry and schedule, as pure functions (no server).

What they must hold: each refund's own backoff (RefundWorkflow._next_delay) is kept, never
checked earlier than it asks; refunds at the same delay fall due together whenever they
started, so a steady state of 2,000 pending refunds costs two reads per poll round; the
registry merges registrations, survives continue-as-new, and stays compact.
"""

from __future__ import annotations

import dataclasses
import itertools
import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from temporalio.contrib.pydantic import pydantic_data_converter

from core.models import ProviderName, ProviderRefund, ProviderRefundStatus, RefundOptions
from workflows.refund import RefundWorkflow
from workflows.status_batch import (
    MAX_WATCHED,
    CarriedWatches,
    StatusBatchInput,
    Ticket,
    Watched,
    WatchRefund,
    WatchRegistry,
    align_up_ms,
    failure_backoff_s,
    fingerprint,
    first_due_ms,
    keep_alive_ms,
    next_due_ms,
    poll_delay_s,
    read_groups,
    registered_due_at,
    status_batch_id,
    untold,
)

S = 1000  # ms


def watch(n: int, **changes: Any) -> WatchRefund:
    fields: dict[str, Any] = {
        "workflow_id": f"refund:key-{n:05d}",
        "refund_id": f"6d1b2c3a-0001-4a5b-8c6d-{n:012d}",
        "account_id": "a1c0ffee-0001-4b2c-9d3e-4f5a6b7c8d01",
        "poll_initial_s": 5.0,
        "poll_max_s": 300.0,
    }
    fields.update(changes)
    return WatchRefund(**fields)


def ticket(entry: Watched, read_at_ms: int | None = None) -> Ticket:
    """As a round starting at ``read_at_ms`` (default: on time) takes it."""
    at = entry.due_ms if read_at_ms is None else read_at_ms
    return Ticket(entry.workflow_id, entry.refund_id, entry.generation, entry.due_ms, at)


# --- the refund's own backoff -----------------------------------------------------------------


@pytest.mark.parametrize(("initial", "cap"), [(5.0, 300.0), (1.5, 7.0), (600.0, 600.0)])
def test_the_delay_is_the_refund_workflows_own(initial: float, cap: float) -> None:
    options = RefundOptions(poll_initial_s=initial, poll_max_s=cap)
    for checks in range(0, 40):
        refund = SimpleNamespace(_checks=checks, _options=options)
        expected = RefundWorkflow._next_delay(refund)  # type: ignore[arg-type]
        assert poll_delay_s(initial, cap, checks) == expected.total_seconds()


def test_align_up() -> None:
    assert align_up_ms(0, 5 * S) == 0
    assert align_up_ms(1, 5 * S) == 5 * S
    assert align_up_ms(5 * S, 5 * S) == 5 * S
    assert align_up_ms(5 * S + 1, 5 * S) == 10 * S


def test_a_registration_is_due_after_its_own_delay_on_that_delays_grid() -> None:
    rng = random.Random(1)
    for _ in range(500):
        now = rng.randrange(10**12, 2 * 10**12)
        checks = rng.randrange(0, 12)
        delay = round(poll_delay_s(5.0, 300.0, checks) * S)
        due = first_due_ms(now, 5.0, 300.0, checks, None)
        assert due % delay == 0
        assert now + delay <= due < now + 2 * delay
    assert first_due_ms(10**12 + 3, 5.0, 300.0, 4, 0.0) == 10**12 + 3
    assert first_due_ms(10**12 + 3, 5.0, 300.0, 4, 2.5) == 10**12 + 3 + 2500


def test_the_next_check_keeps_the_backoff_and_the_grid() -> None:
    # At the cap: exactly one delay after the previous due time, the round on time or a
    # moment late (up to the one-second window).
    assert next_due_ms(600 * S, 600 * S, 300.0) == 900 * S
    assert next_due_ms(600 * S, 600 * S + 700, 300.0) == 900 * S
    # Doubling: the next due time lies on the new delay's grid, at most half a delay later.
    assert next_due_ms(40 * S, 40 * S, 80.0) == 160 * S
    assert next_due_ms(80 * S, 80 * S, 80.0) == 160 * S
    # A round that started late: never less than a delay after it (less the window), on the
    # grid.
    assert next_due_ms(600 * S, 602 * S, 300.0) == 1200 * S
    assert next_due_ms(600 * S, 800 * S, 300.0) == 1200 * S
    assert next_due_ms(0, 5 * S + 300, 5.0) == 10 * S
    assert next_due_ms(0, 5 * S + 800, 5.0) == 10 * S
    assert next_due_ms(0, 6 * S + 800, 5.0) == 15 * S
    # Delays under two seconds: the window is at most half of one.
    assert next_due_ms(0, 600, 1.0) == 2 * S


def test_failed_reads_back_off_doubling_to_ten_minutes() -> None:
    assert [failure_backoff_s(n) for n in range(0, 9)] == [0, 10, 20, 40, 80, 160, 320, 600, 600]


# --- rounds -------------------------------------------------------------------------------------


def simulate(
    registry: WatchRegistry,
    start_ms: int,
    end_ms: int,
    latency_ms: int = 700,
    arrivals: list[tuple[int, WatchRefund]] | None = None,
) -> list[tuple[int, list[str]]]:
    """The workflow's loop on the registry alone, every read answering "pending":
    (round time, ids read) per round."""
    pending = sorted(arrivals or [], key=lambda a: a[0])
    rounds: list[tuple[int, list[str]]] = []
    now = start_ms
    while now < end_ms:
        earliest = registry.earliest_due_ms()
        next_arrival = pending[0][0] if pending else None
        if next_arrival is not None and (earliest is None or next_arrival < earliest):
            now = max(now, next_arrival)
            registry.watch(pending.pop(0)[1], now)
            continue
        if earliest is None:
            break
        now = max(now, earliest)
        if now >= end_ms:
            break
        due = registry.due(earliest)
        tickets = [ticket(e, now) for e in due]
        rounds.append((now, [t.refund_id for t in tickets]))
        now += latency_ms
        for t in tickets:
            assert registry.record(t, counted=True, failed=False, now_ms=now) is not None
    return rounds


def test_2000_refunds_started_at_different_times_share_two_reads_per_poll_round() -> None:
    """The issue's figure: 2,000 pending refunds on one token, <= 1 read per 1000 refunds per
    poll round, once they reach their cap (however they were spread when they started)."""
    rng = random.Random(7)
    registry = WatchRegistry()
    start = 1_750_000_000_000
    arrivals = [(start + rng.randrange(0, 600 * S), watch(n)) for n in range(2000)]
    rounds = simulate(registry, start, start + 4 * 3600 * S, arrivals=arrivals)
    # Every refund reached the 300 s cap within the first hour; from then on:
    steady = [(at, ids) for at, ids in rounds if at >= start + 3600 * S]
    reads = sum(-(-len(ids) // 1000) for _, ids in steady)
    poll_rounds = (3 * 3600) / 300
    assert reads <= 2 * poll_rounds
    assert all(len(ids) == 2000 for _, ids in steady)


def test_each_refund_is_read_on_its_own_backoff() -> None:
    rng = random.Random(3)
    registry = WatchRegistry()
    start = 1_750_000_000_000
    options = [(5.0, 300.0), (2.0, 40.0), (30.0, 30.0), (7.0, 100.0)]
    arrivals = []
    for n in range(400):
        initial, cap = options[n % len(options)]
        checks = rng.randrange(0, 4)
        arrivals.append(
            (
                start + rng.randrange(0, 120 * S),
                watch(n, poll_initial_s=initial, poll_max_s=cap, checks_so_far=checks),
            )
        )
    by_id = {w.refund_id: (at, w) for at, w in arrivals}
    rounds = simulate(registry, start, start + 2 * 3600 * S, arrivals=arrivals)
    reads: dict[str, list[int]] = {}
    for at, ids in rounds:
        assert len(ids) == len(set(ids))
        for refund_id in ids:
            reads.setdefault(refund_id, []).append(at)
    for refund_id, times in reads.items():
        registered_at, w = by_id[refund_id]
        checks = w.checks_so_far
        previous = registered_at
        for k, at in enumerate(times):
            delay = poll_delay_s(w.poll_initial_s, w.poll_max_s, checks + k) * S
            gap = at - previous
            # Never earlier than its own backoff (the round's one-second window aside) ...
            assert gap >= delay - 1000, (refund_id, k, gap, delay)
            # ... and at most one delay later than it (the first), half a delay while doubling.
            assert gap <= 2 * delay + 1000, (refund_id, k, gap, delay)
            previous = at
    # The cap is kept exactly once reached (rounds run 0.7 s late: not enough to move them).
    for refund_id, times in reads.items():
        w = by_id[refund_id][1]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert gaps[-3:] == [w.poll_max_s * S] * 3


# --- the registry -----------------------------------------------------------------------------


def test_registering_again_merges_never_later_never_forgetting_checks() -> None:
    registry = WatchRegistry()
    now = 1_750_000_000_000
    assert registry.watch(watch(1, checks_so_far=6), now)
    entry = registry.entries["refund:key-00001"]
    due = entry.due_ms
    assert entry.checks == 6
    # The watchdog registers again with an older count: the count and the due time stay.
    assert registry.watch(watch(1, checks_so_far=2), now + 10 * S)
    assert (entry.checks, entry.due_ms) == (6, due)
    # check_now: due at once.
    assert registry.watch(watch(1, checks_so_far=6, due_in_s=0), now + 20 * S)
    assert entry.due_ms == now + 20 * S
    # A new provider refund id (an operator adopted another): a fresh schedule.
    assert registry.watch(watch(1, refund_id="other", checks_so_far=0), now + 30 * S)
    assert (entry.refund_id, entry.checks) == ("other", 0)
    assert len(registry) == 1


def test_a_result_for_an_older_registration_never_undoes_a_newer_one() -> None:
    registry = WatchRegistry()
    now = 1_750_000_000_000
    registry.watch(watch(1, checks_so_far=3), now)
    entry = registry.entries["refund:key-00001"]
    taken = ticket(entry)
    # While the round reads it: check_now (due at once), and for another refund: a new id.
    registry.watch(watch(1, checks_so_far=3, due_in_s=0), now + S)
    after = registry.record(taken, counted=True, failed=False, now_ms=now + 2 * S)
    assert after is entry
    assert entry.checks == 4
    assert entry.due_ms == now + S
    registry.watch(watch(1, refund_id="new-id"), now + 3 * S)
    assert registry.record(taken, counted=True, failed=False, now_ms=now + 4 * S) is None
    assert (entry.refund_id, entry.checks) == ("new-id", 0)


def test_unwatch_and_a_full_batch_declines() -> None:
    registry = WatchRegistry(max_watched=2)
    now = 1_750_000_000_000
    assert registry.watch(watch(1), now)
    assert registry.watch(watch(2), now)
    assert not registry.watch(watch(3), now)
    assert registry.watch(watch(2, checks_so_far=1), now)  # a refresh is not a newcomer
    registry.unwatch(watch(1).workflow_id)
    registry.unwatch("refund:never-there")
    assert registry.watch(watch(3), now)
    assert sorted(registry.entries) == [watch(2).workflow_id, watch(3).workflow_id]


def test_failed_reads_keep_the_entry_and_back_off() -> None:
    registry = WatchRegistry()
    now = 1_750_000_000_000
    registry.watch(watch(1, checks_so_far=1), now)
    entry = registry.entries["refund:key-00001"]
    for failures in range(1, 8):
        taken = ticket(entry)
        at = entry.due_ms + 600 * S  # a spent call budget: ten minutes later
        registry.record(taken, counted=False, failed=True, now_ms=at)
        assert entry.failures == failures
        assert entry.checks == 1
        wait = max(5.0, failure_backoff_s(failures)) * S
        assert at + wait <= entry.due_ms < at + wait + 5 * S
    # A refused read counts as a check (as RefundWorkflow counts it), and still backs off.
    registry.record(ticket(entry), counted=True, failed=True, now_ms=entry.due_ms)
    assert (entry.checks, entry.failures) == (2, 8)
    # A read that works resets the failures.
    registry.record(ticket(entry), counted=True, failed=False, now_ms=entry.due_ms)
    assert (entry.checks, entry.failures) == (3, 0)


def test_reads_group_by_profile_at_most_1000_each() -> None:
    registry = WatchRegistry()
    now = 1_750_000_000_000
    for n in range(2500):
        registry.watch(watch(n), now)
    for n in range(2500, 2600):
        registry.watch(watch(n, merchant="hotel-b"), now)
    groups = read_groups(registry.due(registry.earliest_due_ms() or 0))
    assert [(merchant, len(chunk)) for _, merchant, chunk in groups] == [
        ("default", 1000),
        ("default", 1000),
        ("default", 500),
        ("hotel-b", 100),
    ]
    assert {provider for provider, _, _ in groups} == {ProviderName.MEWS}


def test_the_registry_survives_continue_as_new_compactly() -> None:
    registry = WatchRegistry()
    now = 1_750_000_000_000
    rng = random.Random(5)
    for n in range(MAX_WATCHED):
        registry.watch(
            watch(
                n,
                checks_so_far=rng.randrange(0, 20),
                merchant=rng.choice(["default", "hotel-b"]),
                enterprise_id=rng.choice([None, "e1c0ffee-0001-4b2c-9d3e-4f5a6b7c8d01"]),
                poll_initial_s=rng.choice([5.0, 10.0]),
            ),
            now + rng.randrange(0, 60 * S),
        )
    registry.record(
        ticket(registry.entries["refund:key-00007"]), counted=False, failed=True, now_ms=now
    )
    # Every refund told a pending result (patch status-batch-on-change): the largest carry.
    for entry in registry.entries.values():
        entry.told = fingerprint(pending(entry.refund_id))
        entry.keep_alive_ms = entry.due_ms
    carried = registry.carry()
    assert len(carried.schedules) == 4
    payload = pydantic_data_converter.payload_converter.to_payloads(
        [StatusBatchInput(task_queue="refunds.budget.mews.default", carried=carried)]
    )[0]
    size = len(payload.data)
    # Well below the 2 MB payload limit even when full; about 220 bytes a refund.
    assert size < 1_300_000, size
    assert size / MAX_WATCHED < 260
    decoded = pydantic_data_converter.payload_converter.from_payloads([payload], [StatusBatchInput])
    back = WatchRegistry.from_carried(decoded[0].carried, MAX_WATCHED)
    assert back.entries == registry.entries
    assert [e.workflow_id for e in back.entries.values()] == list(registry.entries)


def pending(refund_id: str, raw_status: str = "Pending") -> ProviderRefund:
    return ProviderRefund(
        refund_id=refund_id,
        status=ProviderRefundStatus.PENDING,
        raw_status=raw_status,
        amount_minor=500,
        currency="EUR",
    )


def test_an_unchanged_pending_result_goes_untold_until_its_keep_alive_read() -> None:
    """Patch status-batch-on-change: a read goes untold only when it finds the pending refund
    the refund was told last and the next read still comes no later than the keep-alive read
    that result named; the keep-alive read is the last within the quiet time of the next."""
    registry = WatchRegistry()
    registry.watch(watch(1, poll_initial_s=300.0), 0)
    entry = registry.entries["refund:key-00001"]
    answer = pending(entry.refund_id)
    hour = 3600 * S
    assert not untold(entry, answer)  # never told
    # Told at a read: its next read is entry.due_ms, every five minutes from there.
    keep = keep_alive_ms(entry, hour)
    assert keep == entry.due_ms + hour
    entry.told, entry.keep_alive_ms = fingerprint(answer), keep
    assert untold(entry, answer)
    next_read = entry.due_ms
    entry.due_ms = keep  # the read before the keep-alive read: untold
    assert untold(entry, answer)
    entry.due_ms = keep + 300 * S  # the keep-alive read (the next one passes it): told
    assert not untold(entry, answer)
    entry.due_ms = keep + 1  # a late round moved the next read past it: told
    assert not untold(entry, answer)
    entry.due_ms = next_read
    assert not untold(entry, pending(entry.refund_id, "Processing"))  # a change
    assert not untold(entry, None)  # not found
    final = answer.model_copy(update={"status": ProviderRefundStatus.SUCCEEDED})
    assert not untold(dataclasses.replace(entry, told=fingerprint(final)), final)
    # No quiet time: the next read is the keep-alive (every read told, as before the patch).
    assert keep_alive_ms(entry, 0) == entry.due_ms
    # A doubling delay (5 s, 10 s, 20 s, 40 s on the grid): a later read, within the minute.
    young = dataclasses.replace(
        entry, schedule=dataclasses.replace(entry.schedule, poll_initial_s=5.0), checks=0
    )
    assert young.due_ms < keep_alive_ms(young, 60 * S) <= young.due_ms + 60 * S
    # Carried through continue-as-new.
    back = WatchRegistry.from_carried(registry.carry(), MAX_WATCHED).entries[entry.workflow_id]
    assert (back.told, back.keep_alive_ms) == (entry.told, keep)
    # The refund registers again (its watchdog, check_now, a new run): told at the next read.
    registry.watch(watch(1, poll_initial_s=300.0), 1000)
    assert not untold(entry, answer)
    # A carry from before the patch has no told columns: nothing was told.
    old = registry.carry().model_copy(update={"told": (), "keep_alive_ms": ()})
    back = WatchRegistry.from_carried(old, MAX_WATCHED).entries[entry.workflow_id]
    assert (back.told, back.keep_alive_ms) == (None, None)
    for told, keep_alive in ((("x", "y"), (None, None)), (("x",), ())):
        with pytest.raises(ValueError, match="for every watched refund or for none"):
            CarriedWatches.model_validate(
                {**registry.carry().model_dump(), "told": told, "keep_alive_ms": keep_alive}
            )


def test_the_fingerprint_is_of_fixed_fields_not_the_models_json() -> None:
    """What was told is carried through continue-as-new and compared by later code (also on
    replay): its digest must not move with the model's JSON, only with what the provider
    says."""
    answer = pending("r-1")
    assert fingerprint(answer) == "025c933c6f8ca9e1"
    assert fingerprint(answer.model_copy(update={"amount_minor": 400})) != fingerprint(answer)
    assert fingerprint(answer.model_copy(update={"failure_reason": "x"})) != fingerprint(answer)


def test_carried_columns_must_line_up() -> None:
    with pytest.raises(ValueError, match="one value per watched refund"):
        CarriedWatches(workflow_ids=("a",), refund_ids=())
    with pytest.raises(ValueError, match="schedule index"):
        CarriedWatches(
            workflow_ids=("a",),
            refund_ids=("r",),
            account_ids=(None,),
            enterprise_ids=(None,),
            schedule=(0,),
            checks=(0,),
            due_ms=(0,),
            failures=(0,),
        )


def test_the_refund_side_knows_when_it_is_due_and_the_id() -> None:
    now = datetime(2026, 5, 1, 12, 0, 2, tzinfo=UTC)
    assert registered_due_at(now, watch(1, checks_so_far=0)) == datetime(
        2026, 5, 1, 12, 0, 10, tzinfo=UTC
    )
    assert registered_due_at(now, watch(1, due_in_s=0)) == now
    registry = WatchRegistry()
    registry.watch(
        watch(1, checks_so_far=9),
        (now - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1),
    )
    due_ms = registry.entries["refund:key-00001"].due_ms
    assert registered_due_at(now, watch(1, checks_so_far=9)) == datetime(
        1970, 1, 1, tzinfo=UTC
    ) + timedelta(milliseconds=due_ms)
    assert status_batch_id("refunds.budget.mews.default") == (
        "refund-status-batch:refunds.budget.mews.default"
    )


def test_rounds_read_each_refund_once() -> None:
    registry = WatchRegistry()
    now = 1_750_000_000_000
    for n in range(3000):
        registry.watch(watch(n, poll_initial_s=float(1 + n % 3), poll_max_s=8.0), now)
    rounds = simulate(registry, now, now + 120 * S)
    for _, ids in rounds:
        counts = Counter(ids)
        assert max(counts.values()) == 1
