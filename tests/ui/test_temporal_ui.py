"""The Temporal UI as operators use it: list refunds by search attribute, cancel from the UI.

The screenshots this test takes are the ones in docs/operations.md; refresh them with
``REFUNDS_UPDATE_SCREENSHOTS=1 .venv/bin/pytest tests/ui``.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import pytest
from selenium import webdriver
from selenium.common.exceptions import (
    StaleElementReferenceException,
    TimeoutException,
    WebDriverException,
)
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from core.models import ProviderName, RefundRequest, RefundState
from tests.support.refunds import wait_for_state
from tests.ui.conftest import Screenshots, UiStack

pytestmark = pytest.mark.e2e

WAIT_S = 20.0
CANCEL_REASON = "sent from the UI"
# The value of every signal-name field on the page (the UI keeps a hidden copy of the form).
CHOSEN_SIGNALS = (
    "return Array.from(document.querySelectorAll('input#signal-select')).map(e => e.value)"
)
PENDING_PAYNOW = 'RefundState="PENDING" AND RefundProvider="paynow"'
REFUNDS_ONLY = 'WorkflowType="RefundWorkflow"'
# The refund list as docs/operations.md sets it up: these columns added, these removed.
ADDED_COLUMNS = ("RefundState", "RefundProvider", "RefundPaymentId")
REMOVED_COLUMNS = ("Run ID", "Type", "End")
VIEW_NAME = "Refunds"
CANCEL_NOTE = "Request Cancellation do the same safe thing"


def new_key(label: str) -> str:
    return f"ui-{label}-{uuid.uuid4().hex[:10]}"


def paynow_request(key: str, payment_id: str) -> RefundRequest:
    return RefundRequest(
        idempotency_key=key,
        provider=ProviderName.PAYNOW,
        payment_id=payment_id,
        amount_minor=1250,
        currency="PLN",
        reason="ui test: customer returned the goods",
    )


def wait_until(
    driver: webdriver.Chrome, what: str, check: Callable[[], bool], timeout_s: float = WAIT_S
) -> None:
    def poll(_: webdriver.Chrome) -> bool:
        try:
            return check()
        except (StaleElementReferenceException, WebDriverException):
            return False

    WebDriverWait(driver, timeout_s, poll_frequency=0.25).until(poll, f"timed out: {what}")


def visible(driver: webdriver.Chrome, css: str) -> WebElement:
    """The first displayed element matching ``css`` (the UI keeps hidden copies of some)."""
    found: list[WebElement] = []

    def shown() -> bool:
        found[:] = [e for e in driver.find_elements(By.CSS_SELECTOR, css) if e.is_displayed()]
        return bool(found)

    wait_until(driver, f"visible: {css}", shown)
    return found[0]


def click(driver: webdriver.Chrome, css: str) -> None:
    element = visible(driver, css)
    wait_until(driver, f"enabled: {css}", element.is_enabled)
    element.click()


def open_filtered_list(
    driver: webdriver.Chrome, ui: UiStack, query: str, shown: str, hidden: str
) -> None:
    """Open the list with ``query`` until ``shown`` is listed and ``hidden`` is not.

    Visibility is eventually consistent, so the page is reloaded until it agrees.
    """
    url = f"{ui.ui_url}/namespaces/default/workflows?query={quote(query)}"
    deadline = time.monotonic() + WAIT_S

    def agrees() -> bool:
        source = driver.page_source
        return shown in source and hidden not in source

    while True:
        driver.get(url)
        try:
            wait_until(driver, f"{query!r} lists {shown} only", agrees, timeout_s=3)
            return
        except TimeoutException:
            if time.monotonic() > deadline:
                raise


def send_cancel_signal(driver: webdriver.Chrome, reason: str, screenshot: str) -> None:
    """Workflow page -> More Actions -> Send a Signal -> `cancel` with ``{"reason": ...}``."""
    click(driver, 'button[aria-controls="workflow-actions"]')
    click(driver, 'li[data-testid="signal-button"]')
    modal = "dialog#signal-confirmation-modal"
    visible(driver, modal)
    click(driver, f'{modal} [data-testid="signal-select-button"]')
    options = f"{modal} #signal-select-select li[role=option]"
    wait_until(
        driver,
        "the `cancel` signal is offered",
        lambda: any(
            o.text.strip() == "cancel" for o in driver.find_elements(By.CSS_SELECTOR, options)
        ),
    )
    next(
        o for o in driver.find_elements(By.CSS_SELECTOR, options) if o.text.strip() == "cancel"
    ).click()
    wait_until(
        driver,
        "`cancel` is the chosen signal",
        lambda: "cancel" in driver.execute_script(CHOSEN_SIGNALS),
    )
    editor = visible(driver, f'{modal} [contenteditable="true"][aria-label="Data"]')
    editor.click()
    editor.send_keys(json.dumps({"reason": reason}))
    # CodeMirror closes brackets and quotes as one types; the text must still be exactly this.
    wait_until(
        driver,
        "the JSON input holds the cancel request",
        lambda: json.loads(editor.text or "null") == {"reason": reason},
    )
    submit = f'{modal} [data-testid="confirm-modal-button"]'
    wait_until(
        driver,
        "Submit is enabled",
        lambda: visible(driver, submit).is_enabled(),
    )
    driver.save_screenshot(screenshot)
    click(driver, submit)
    wait_until(
        driver,
        "the signal dialog closes",
        lambda: not any(e.is_displayed() for e in driver.find_elements(By.CSS_SELECTOR, modal)),
    )


def set_up_refunds_view(driver: webdriver.Chrome, ui: UiStack) -> None:
    """docs/operations.md "The refund list": refunds only, their state as a column, saved."""
    driver.get(f"{ui.ui_url}/namespaces/default/workflows?query={quote(REFUNDS_ONLY)}")
    click(driver, '[data-testid="workflows-summary-table-configuration-button"]')
    for name in ADDED_COLUMNS:
        click(driver, f'[data-testid="orderable-list-item-{name}"] button')
    for name in REMOVED_COLUMNS:
        # The last button of a column in view removes it (before it: move up, move down).
        item = visible(driver, f'[data-testid="orderable-list-item-{name}"]')
        item.find_elements(By.CSS_SELECTOR, "button")[-1].click()
    click(driver, '[data-testid="drawer-close-button"]')
    click(driver, '[data-testid="create-view-button"]')
    visible(driver, '[data-testid="workflow-save-view-modal-input"]').send_keys(VIEW_NAME)
    click(driver, '[data-testid="confirm-modal-button"]')
    wait_until(
        driver,
        "the view is saved in the browser",
        lambda: VIEW_NAME in (driver.execute_script(SAVED_VIEWS) or ""),
    )


def current_details(driver: webdriver.Chrome) -> str:
    """The text of the *Current Details* box (the UI renders it in its own frame)."""
    driver.switch_to.frame(visible(driver, "iframe#user-metadata-current-details"))
    try:
        return str(driver.find_element(By.TAG_NAME, "body").text)
    finally:
        driver.switch_to.default_content()


SAVED_VIEWS = "return window.localStorage.getItem('saved-workflow-queries')"


def row_texts(driver: webdriver.Chrome) -> dict[str, str]:
    """The list's rows by workflow id: the text of each row."""
    rows: dict[str, str] = {}
    for row in driver.find_elements(By.CSS_SELECTOR, "table tbody tr"):
        for link in row.find_elements(By.CSS_SELECTOR, "a"):
            if link.text.startswith(("refund:", "refund-lane:")):
                rows[link.text] = row.text
    return rows


async def test_list_by_search_attribute_and_cancel_from_the_signal_form(
    ui_stack: UiStack, browser: webdriver.Chrome, screenshots: Screenshots, tmp_path: Path
) -> None:
    try:
        await run_scenario(ui_stack, browser, screenshots)
    except BaseException:
        # What the browser showed when it went wrong, for whoever reads the failure.
        browser.save_screenshot(str(tmp_path / "failure.png"))
        (tmp_path / "failure.html").write_text(browser.page_source)
        print(f"browser state at the failure: {tmp_path}/failure.png and failure.html")
        raise


async def run_scenario(ui: UiStack, browser: webdriver.Chrome, screenshots: Screenshots) -> None:
    awaiting = await ui.new_payment(ProviderName.PAYNOW, "awaiting")
    succeeds = await ui.new_payment(ProviderName.PAYNOW, "succeeds")
    fails = await ui.new_payment(ProviderName.PAYNOW, "fails")
    awaiting_key, succeeds_key = new_key("awaiting"), new_key("succeeds")
    fails_key = new_key("fails")
    started = await ui.client.start(paynow_request(awaiting_key, awaiting["payment_id"]))
    done = await ui.client.start(paynow_request(succeeds_key, succeeds["payment_id"]))
    failed = await ui.client.start(paynow_request(fails_key, fails["payment_id"]))

    assert (await asyncio.wait_for(ui.client.wait(succeeds_key), WAIT_S)).state is (
        RefundState.SUCCEEDED
    )
    pending = await wait_for_state(ui.client, awaiting_key, RefundState.PENDING, timeout_s=WAIT_S)
    assert pending.provider_status == "NEW"

    # 1. The refund list filtered by search attributes.
    open_filtered_list(
        browser, ui, PENDING_PAYNOW, shown=started.workflow_id, hidden=done.workflow_id
    )
    browser.save_screenshot(screenshots.path("ui-refunds-pending-paynow.png"))

    # 2. The awaiting refund's page: its details say which cancel is safe; cancel through
    # the signal form.
    browser.get(f"{ui.ui_url}/namespaces/default/workflows/{quote(started.workflow_id)}")
    click(browser, '[data-testid="user-metadata-tab"]')
    wait_until(
        browser,
        "the details show the state and the note on cancelling",
        lambda: "PENDING" in current_details(browser) and CANCEL_NOTE in current_details(browser),
    )
    browser.save_screenshot(str(screenshots.path("ui-refund-details.png")))
    browser.get(f"{ui.ui_url}/namespaces/default/workflows/{quote(started.workflow_id)}")
    visible(browser, 'button[aria-controls="workflow-actions"]')
    send_cancel_signal(browser, CANCEL_REASON, str(screenshots.path("ui-cancel-signal.png")))

    final = await asyncio.wait_for(ui.client.wait(awaiting_key), WAIT_S)
    assert final.state is RefundState.CANCELED, final
    assert final.cancel_reason == CANCEL_REASON
    assert (await ui.client.status(awaiting_key)).state is RefundState.CANCELED
    journal = await ui.journal(ProviderName.PAYNOW)
    cancel_path = f"/v3/refunds/{pending.provider_refund_id}/cancel"
    assert [r["method"] for r in journal["requests"] if r["path"] == cancel_path] == ["POST"]

    # 3. The workflow page after: completed, its result the canceled status.
    browser.refresh()
    wait_until(
        browser,
        "the page shows the canceled result",
        lambda: (
            "CANCELED" in browser.page_source
            and CANCEL_REASON in browser.page_source
            and "Results will appear upon completion" not in browser.page_source
        ),
    )
    browser.save_screenshot(str(screenshots.path("ui-refund-canceled.png")))

    # 4. The refund list set up once as the docs say: refunds only, each with its outcome.
    ended = await asyncio.wait_for(ui.client.wait(fails_key), WAIT_S)
    assert ended.state is RefundState.FAILED
    set_up_refunds_view(browser, ui)
    expected = {
        started.workflow_id: "CANCELED",
        done.workflow_id: "SUCCEEDED",
        failed.workflow_id: "FAILED",
    }
    deadline = time.monotonic() + WAIT_S
    while True:
        rows = row_texts(browser)
        shows_outcomes = all(state in rows.get(wid, "") for wid, state in expected.items())
        if shows_outcomes or time.monotonic() > deadline:
            break
        # Visibility is eventually consistent: reload the saved view until it agrees.
        browser.refresh()
        await asyncio.sleep(0.5)
    assert shows_outcomes, rows
    assert not [wid for wid in rows if wid.startswith("refund-lane:")], rows
    # Every column the docs name is there, the removed ones are not.
    headers = [h.text for h in browser.find_elements(By.CSS_SELECTOR, "table thead th")]
    assert all(name in headers for name in ADDED_COLUMNS), headers
    assert not any(name in headers for name in REMOVED_COLUMNS), headers
    browser.save_screenshot(str(screenshots.path("ui-refunds-view.png")))
