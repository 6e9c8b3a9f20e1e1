"""Provider budgets (issue 12, item 4): the "N/Ts" settings, the rate given to Temporal,
which profiles share a budget queue and its name, the route activity, and the workers built
for the queues. No server here: tests/budgets/test_budget_e2e.py runs them on one."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

import worker
from activities import RefundActivities
from activities.failures import PROVIDER_NOT_CONFIGURED
from core.budgets import (
    BURST_S,
    DISPATCH_SLACK_S,
    PARTITIONS,
    Budget,
    BudgetError,
    BudgetGroup,
    budget_queue,
    group_profiles,
    parse_budget,
)
from core.models import ProviderName, RefundRequest
from core.settings import Settings
from providers.profiles import ProfilesFileError
from providers.registry import ProviderDirectory

MEWS_PAYMENT = "6d1b2c3a-0101-4b2c-9d3e-4f5a6b7c8d01"
MEWS_ACCOUNT = "a1c0ffee-0100-4b2c-9d3e-4f5a6b7c8d00"
SHARED_TOKEN = "shared-access-secret"

# Three Mews profiles on one access token (an environment variable for two, a file holding
# the same value for the third), one on a token of its own, one disabled; two Paynow shops
# on one API key and a third on its own.
PROFILES = """
[mews.hotel-b]
base_url = "https://api.mews.com"
portfolio = false
client_token_env = "T_CLIENT"
access_token_env = "T_SHARED"

[mews.hotel-a]
base_url = "https://api.mews.com"
portfolio = false
client_token_env = "T_CLIENT"
access_token_file = "shared-access"
budget = "100/30s"

[mews.hotel-c]
base_url = "https://api.mews-demo.com"
portfolio = false
client_token_env = "T_CLIENT"
access_token_env = "T_SHARED"

[mews.solo]
base_url = "https://api.mews.com"
portfolio = true
client_token_env = "T_CLIENT"
access_token_env = "T_SOLO"

[mews.closed]
base_url = "https://api.mews.com"
portfolio = false
enabled = false
client_token_env = "T_UNSET"
access_token_env = "T_UNSET"

[paynow.shop-z]
base_url = "https://api.paynow.pl"
api_key_env = "T_SHOP_KEY"
signature_key_env = "T_SIG_1"

[paynow.shop-y]
base_url = "https://api.paynow.pl"
api_key_env = "T_SHOP_KEY"
signature_key_env = "T_SIG_2"
budget = "50/10s"

[paynow.shop-x]
base_url = "https://api.paynow.pl"
api_key_env = "T_OTHER_KEY"
signature_key_env = "T_SIG_1"
"""
SECRETS = {
    "T_CLIENT": "client-secret",
    "T_SHARED": SHARED_TOKEN,
    "T_SOLO": "solo-access-secret",
    "T_SHOP_KEY": "shop-key-secret",
    "T_OTHER_KEY": "other-key-secret",
    "T_SIG_1": "sig-one-secret",
    "T_SIG_2": "sig-two-secret",
}


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("T_UNSET", raising=False)


def settings_for(tmp_path: Path, text: str = PROFILES, **values: Any) -> Settings:
    (tmp_path / "shared-access").write_text(SHARED_TOKEN + "\n")
    path = tmp_path / "profiles.toml"
    path.write_text(text)
    # Validated, not read from the environment: this machine's settings never leak in.
    return Settings.model_validate({"refunds_profiles_file": path, **values})


def request(merchant: str, provider: ProviderName = ProviderName.MEWS) -> RefundRequest:
    fields: dict[str, Any]
    if provider is ProviderName.MEWS:
        fields = {"payment_id": MEWS_PAYMENT, "account_id": MEWS_ACCOUNT}
    else:
        fields = {"payment_id": "SUCC-EED-S00-001", "amount_minor": 100, "currency": "PLN"}
    return RefundRequest.model_validate(
        {
            "idempotency_key": "k-1",
            "provider": provider,
            "reason": "test",
            "merchant": merchant,
            **fields,
        }
    )


# --- parsing and settings ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("200/30s", Budget(200, 30.0)),
        (" 20/2.5s ", Budget(20, 2.5)),
        ("5/1s", Budget(5, 1.0)),
        ("none", None),
        ("NONE", None),
        (None, None),
    ],
)
def test_budgets_are_read(text: str | None, expected: Budget | None) -> None:
    assert parse_budget(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("200", "is not a budget: write N/Ts"),
        ("200/30", "is not a budget: write N/Ts"),
        ("200/30m", "is not a budget: write N/Ts"),
        ("200 per 30s", "is not a budget: write N/Ts"),
        ("-1/30s", "is not a budget: write N/Ts"),
        ("4/30s", "N must be from 5"),
        ("200/0s", "T must be more than 0"),
        ("", "is not a budget"),
    ],
)
def test_a_bad_budget_says_how_to_write_one(text: str, message: str) -> None:
    with pytest.raises(BudgetError, match=message):
        parse_budget(text)


def test_budget_settings_default_to_mews_documented_limit_and_none_for_paynow() -> None:
    settings = Settings.model_validate({})
    assert settings.refunds_mews_budget == "200/30s"
    assert settings.refunds_paynow_budget is None


def test_budget_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFUNDS_MEWS_BUDGET", "none")
    monkeypatch.setenv("REFUNDS_PAYNOW_BUDGET", "300/60.0s")
    settings = Settings(_env_file=None)
    assert settings.refunds_mews_budget is None
    assert settings.refunds_paynow_budget == "300/60s"
    # Blank (as in a copied .env.example) is the default, never "no budget".
    monkeypatch.setenv("REFUNDS_MEWS_BUDGET", "")
    monkeypatch.setenv("REFUNDS_PAYNOW_BUDGET", " ")
    settings = Settings(_env_file=None)
    assert settings.refunds_mews_budget == "200/30s"
    assert settings.refunds_paynow_budget is None


def test_a_bad_budget_setting_fails_at_start_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REFUNDS_MEWS_BUDGET", "200 a minute")
    with pytest.raises(ValidationError) as failed:
        Settings(_env_file=None)
    assert failed.value.errors()[0]["loc"] == ("refunds_mews_budget",)
    assert "write N/Ts, at most N requests in any T seconds (e.g. 200/30s)" in str(failed.value)


# --- the rate given to Temporal --------------------------------------------------------------


def test_the_rate_leaves_room_for_the_servers_burst_and_partitions() -> None:
    assert Budget(200, 30).tasks_per_second == pytest.approx((200 - 4) / 32)
    assert Budget(200, 30).tasks_per_second < 200 / 30


def dispatch_times(rate: float, tasks: int) -> list[float]:
    """When Temporal's matcher hands out ``tasks`` backlogged tasks, spread over the queue's
    partitions, at ``rate`` for the whole queue: each partition a GCRA limiter at rate/P with
    a one-second burst, as service/matching's simpleLimiter (``consume``: ready time moves
    to max(now, ready + burst) - burst + interval; a task goes when ready <= now)."""
    interval = PARTITIONS / rate
    times: list[float] = []
    for partition in range(PARTITIONS):
        ready, now = -math.inf, 0.0
        for _ in range(tasks // PARTITIONS + (partition < tasks % PARTITIONS)):
            now = max(now, ready)
            times.append(now)
            ready = max(now, ready + BURST_S) - BURST_S + interval
    return sorted(times)


def most_in_a_window(times: list[float], window_s: float) -> int:
    most, start = 0, 0
    for end, at in enumerate(times):
        while times[start] <= at - window_s:
            start += 1
        most = max(most, end - start + 1)
    return most


@pytest.mark.parametrize("budget", [Budget(200, 30), Budget(20, 2), Budget(5, 1), Budget(60, 3)])
def test_no_window_sees_more_than_the_budget(budget: Budget) -> None:
    """The worst case: a full backlog from the start, and the earliest calls reach the
    provider as late as the slack allows (a window of T then holds the dispatches of T +
    slack). The naive rate N/T is shown to go over, so the check can fail."""
    window = budget.window_s + DISPATCH_SLACK_S
    tasks = budget.requests * 10
    assert most_in_a_window(dispatch_times(budget.tasks_per_second, tasks), window) <= (
        budget.requests
    )
    naive = budget.requests / budget.window_s
    assert most_in_a_window(dispatch_times(naive, tasks), window) > budget.requests


# --- grouping and names ----------------------------------------------------------------------


def test_group_is_the_first_profile_name_among_those_sharing_a_key() -> None:
    groups = group_profiles([("b", "k1"), ("a", "k1"), ("c", "k2"), ("d", "k1")])
    assert groups == {"a": "a", "b": "a", "d": "a", "c": "c"}


def test_budget_queue_names() -> None:
    assert budget_queue("refunds", ProviderName.MEWS, "default") == "refunds.budget.mews.default"
    group = BudgetGroup(ProviderName.PAYNOW, "shop-x", ("shop-x",), None)
    assert group.queue("refunds-eu") == "refunds-eu.budget.paynow.shop-x"


async def test_profiles_sharing_a_credential_share_one_budget_queue(tmp_path: Path) -> None:
    settings = settings_for(
        tmp_path,
        mews_client_token="client-secret",
        mews_access_token="solo-access-secret",
        refunds_paynow_budget="500/60s",
    )
    directory = ProviderDirectory.from_settings(settings)
    try:
        groups = {(g.provider, g.name): g for g in directory.budget_groups}
        mews, paynow = ProviderName.MEWS, ProviderName.PAYNOW
        assert sorted(groups) == [
            (mews, "default"),
            (mews, "hotel-a"),
            (paynow, "shop-x"),
            (paynow, "shop-y"),
        ]
        # The profile default (MEWS_* settings) holds the same token as solo.
        assert groups[(mews, "default")].profiles == ("default", "solo")
        assert groups[(mews, "default")].budget == Budget(200, 30)
        # A token from a file and the same one from a variable: one group; the strictest
        # budget of its profiles (hotel-a's own) is the group's.
        assert groups[(mews, "hotel-a")].profiles == ("hotel-a", "hotel-b", "hotel-c")
        assert groups[(mews, "hotel-a")].budget == Budget(100, 30)
        assert groups[(paynow, "shop-x")].budget == Budget(500, 60)
        assert groups[(paynow, "shop-y")].profiles == ("shop-y", "shop-z")
        assert groups[(paynow, "shop-y")].budget == Budget(50, 10)

        by_profile = {
            name: directory.budget_group(request(name)).queue("refunds")
            for name in ("default", "solo", "hotel-a", "hotel-b", "hotel-c")
        }
        assert by_profile == {
            "default": "refunds.budget.mews.default",
            "solo": "refunds.budget.mews.default",
            "hotel-a": "refunds.budget.mews.hotel-a",
            "hotel-b": "refunds.budget.mews.hotel-a",
            "hotel-c": "refunds.budget.mews.hotel-a",
        }
        shown = worker.describe_budget_queues(directory.budget_groups, "refunds")
        assert "refunds.budget.paynow.shop-y (profiles shop-y, shop-z; budget 50/10s" in shown
        for text in (shown, *by_profile.values()):
            for secret in SECRETS.values():
                assert secret not in text
    finally:
        await directory.aclose()


def test_without_a_paynow_budget_its_queue_has_none(tmp_path: Path) -> None:
    text = PROFILES.replace('budget = "50/10s"\n', "")
    directory = ProviderDirectory.from_settings(settings_for(tmp_path, text))
    groups = {(g.provider, g.name): g.budget for g in directory.budget_groups}
    assert groups[(ProviderName.PAYNOW, "shop-x")] is None
    assert groups[(ProviderName.PAYNOW, "shop-y")] is None
    assert "refunds.budget.paynow.shop-x (profiles shop-x; no budget)" in (
        worker.describe_budget_queues(directory.budget_groups, "refunds")
    )


def test_a_bad_budget_in_the_profiles_file_names_the_table(tmp_path: Path) -> None:
    text = PROFILES.replace('budget = "100/30s"', 'budget = "lots"')
    with pytest.raises(ProfilesFileError, match=r"\[mews.hotel-a\]: budget: .*write N/Ts"):
        ProviderDirectory.from_settings(settings_for(tmp_path, text))


# --- the route activity ----------------------------------------------------------------------


async def test_route_names_the_budget_queue_of_the_workflows_task_queue(tmp_path: Path) -> None:
    directory = ProviderDirectory.from_settings(settings_for(tmp_path))
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, task_queue="refunds-eu")
    activities = RefundActivities(directory)
    try:
        route = await env.run(activities.route, request("hotel-c"))
        assert route.task_queue == "refunds-eu.budget.mews.hotel-a"
        route = await env.run(activities.route, request("shop-z", ProviderName.PAYNOW))
        assert route.task_queue == "refunds-eu.budget.paynow.shop-y"
    finally:
        await directory.aclose()


@pytest.mark.parametrize(
    ("merchant", "message"),
    [
        ("nowhere", "merchant profile 'nowhere' is not configured for mews"),
        ("closed", "merchant profile 'closed' is disabled for mews"),
    ],
)
async def test_route_refuses_an_unknown_or_disabled_profile(
    tmp_path: Path, merchant: str, message: str
) -> None:
    directory = ProviderDirectory.from_settings(settings_for(tmp_path))
    try:
        with pytest.raises(ApplicationError) as refused:
            await ActivityEnvironment().run(RefundActivities(directory).route, request(merchant))
    finally:
        await directory.aclose()
    assert refused.value.type == PROVIDER_NOT_CONFIGURED
    assert refused.value.non_retryable
    assert message in refused.value.message
    for secret in SECRETS.values():
        assert secret not in refused.value.message


# --- the workers -----------------------------------------------------------------------------


class Recorder:
    """Stands in for temporalio's Worker: keeps what each was built with."""

    built: list[dict[str, Any]] = []

    def __init__(self, client: object, **options: Any) -> None:
        Recorder.built.append(options)


def test_one_rate_limited_worker_per_budget_queue(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worker, "Worker", Recorder)
    Recorder.built = []
    text = PROFILES.replace('budget = "50/10s"\n', "")
    settings = settings_for(tmp_path, text, refunds_task_queue="rq")
    directory = ProviderDirectory.from_settings(settings)
    worker.build_worker(object(), settings, directory)  # type: ignore[arg-type]
    main = Recorder.built.pop()
    worker.build_budget_workers(object(), settings, directory)  # type: ignore[arg-type]

    # The main worker keeps every activity (runs from before budget queues), route too.
    main_names = {a.__name__ for a in main["activities"]}
    assert {"validate", "submit", "poll_status", "cancel", "find_submitted", "route"} <= main_names
    rates = {b["task_queue"]: b["max_task_queue_activities_per_second"] for b in Recorder.built}
    assert rates == {
        "rq.budget.mews.hotel-a": Budget(100, 30).tasks_per_second,
        "rq.budget.mews.solo": Budget(200, 30).tasks_per_second,
        "rq.budget.paynow.shop-x": None,
        "rq.budget.paynow.shop-y": None,
    }
    for built in Recorder.built:
        assert [a.__name__ for a in built["activities"]] == [
            "validate",
            "submit",
            "poll_status",
            "cancel",
            "find_submitted",
            # The batched status reads of Mews refunds (workflows/status_batch.py).
            "check_statuses",
        ]
        assert "workflows" not in built
        assert built["graceful_shutdown_timeout"] == worker.GRACEFUL_SHUTDOWN
