"""With encryption on, Temporal stores ciphertext and the UI shows the refund through the codec.

The stack here runs encrypted (a fresh key per run) with its codec server, and the dev
server's UI is pointed at it (``--ui-codec-endpoint``), as ``refunds dev`` does when
encryption is configured. The test first proves the stored history holds no reason, account
or amount in clear, then that the browser's workflow page shows them: the only way they can
get there is the page's call to the codec server.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import pytest
import pytest_asyncio
from selenium import webdriver
from temporalio.api.common.v1 import Payload
from temporalio.client import Client

from codec.encryption import ENCODING
from core.models import ProviderName, RefundRequest, RefundState
from devstack.stack import EmbeddedStack, StackConfig
from simulators.serving import free_port
from tests.support.payloads import payloads_in
from tests.ui.conftest import Screenshots, UiStack, running
from tests.ui.test_temporal_ui import WAIT_S, visible, wait_until

pytestmark = pytest.mark.e2e

REASON = "codec ui test: teapot lid arrived cracked"
CUSTOMER_REF = "cust-codec-ui-7731"
AMOUNT_MINOR = 4321
AMOUNT_SHOWN = "43.21"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def encrypted_stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[UiStack]:
    key = base64.b64encode(os.urandom(32)).decode()
    stack = EmbeddedStack(
        StackConfig(
            temporal_port=free_port(),
            ui_port=free_port(),
            sim_port=free_port(),
            codec_port=free_port(),
            state_dir=tmp_path_factory.mktemp("refunds-ui-codec-state"),
            poll_initial_s=0.5,
            poll_max_s=1.0,
            secret_env={
                "REFUNDS_ENCRYPTION_KEYS": f"ui-test:{key}",
                "REFUNDS_ENCRYPTION_KEY_ID": "ui-test",
            },
        )
    )
    assert stack.runs_codec
    async with running(stack) as ui:
        yield ui


async def stored_payloads(address: str, workflow_id: str) -> list[Payload]:
    """Every payload of the history as the server holds it: a client without the codec."""
    raw = await Client.connect(address)
    history = await raw.get_workflow_handle(workflow_id).fetch_history()
    return list(payloads_in(json.loads(history.to_json())))


async def test_the_ui_shows_an_encrypted_refund_through_the_codec_server(
    encrypted_stack: UiStack,
    browser: webdriver.Chrome,
    screenshots: Screenshots,
    tmp_path: Path,
) -> None:
    ui = encrypted_stack
    payment = await ui.new_payment(ProviderName.PAYNOW, "succeeds")
    key = f"ui-codec-{uuid.uuid4().hex[:10]}"
    request = RefundRequest(
        idempotency_key=key,
        provider=ProviderName.PAYNOW,
        payment_id=payment["payment_id"],
        amount_minor=AMOUNT_MINOR,
        currency="PLN",
        reason=REASON,
        metadata={"customer_ref": CUSTOMER_REF},
    )
    started = await ui.client.start(request)
    final = await asyncio.wait_for(ui.client.wait(key), WAIT_S)
    assert final.state is RefundState.SUCCEEDED, final

    # What Temporal stores: ciphertext only.
    payloads = await stored_payloads(ui.stack.temporal_address, started.workflow_id)
    encrypted = [p for p in payloads if p.metadata.get("encoding") == ENCODING]
    # Input, memo, summary, activity inputs and results, the result at least.
    assert len(encrypted) >= 6, len(encrypted)
    stored = b"\n".join(p.data for p in payloads)
    for needle in (REASON, CUSTOMER_REF, AMOUNT_SHOWN, str(AMOUNT_MINOR)):
        assert needle.encode() not in stored, f"{needle!r} stored in clear"

    # What the operator's browser shows: decrypted through the codec server.
    url = f"{ui.ui_url}/namespaces/default/workflows/{quote(started.workflow_id)}"
    try:
        browser.get(url)
        visible(browser, 'button[aria-controls="workflow-actions"]')
        wait_until(
            browser,
            "the workflow page shows the decrypted input and result",
            lambda: all(
                needle in browser.page_source
                for needle in (REASON, CUSTOMER_REF, "SUCCEEDED", payment["payment_id"])
            ),
        )
        assert "binary/encrypted" not in browser.page_source
        browser.save_screenshot(str(screenshots.path("ui-refund-decrypted.png")))
    except BaseException:
        browser.save_screenshot(str(tmp_path / "failure.png"))
        (tmp_path / "failure.html").write_text(browser.page_source)
        print(f"browser state at the failure: {tmp_path}/failure.png and failure.html")
        raise
