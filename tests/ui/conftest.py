"""Browser tests: Debian's headless Chromium against the Temporal UI of an embedded stack.

The stack is this package's own (free ports, temporary state) with a slow provider poll, so an
``awaiting`` Paynow refund stays PENDING long enough to be cancelled from the UI. Chromium is
driven by Selenium with the system chromedriver given explicitly: Selenium Manager never runs
(it would try to download a driver) and the browser is told not to reach the network.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from devstack.stack import EmbeddedStack, StackConfig
from simulators.serving import free_port
from starter.client import RefundClient
from tests.support.simulators import SimulatorControl
from tests.support.stacks import started
from tests.support.system_tools import require_program

REPO = Path(__file__).resolve().parents[2]
DOCS_IMAGES = REPO / "docs" / "images"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
UPDATE_SCREENSHOTS_ENV = "REFUNDS_UPDATE_SCREENSHOTS"

CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1000",
)


@dataclass
class UiStack(SimulatorControl):
    stack: EmbeddedStack
    client: RefundClient
    http: httpx.AsyncClient

    @property
    def ui_url(self) -> str:
        return self.stack.ui_url


@dataclass(frozen=True)
class Screenshots:
    """Where screenshots go: ``docs/images`` with REFUNDS_UPDATE_SCREENSHOTS=1, else tmp."""

    directory: Path

    def path(self, name: str) -> Path:
        return self.directory / name


def _require(path: Path) -> None:
    # Skips on a machine that could not install them; fails under CI=true.
    require_program(path, package="chromium chromium-driver", purpose="the browser tests")


# Package scope, as in tests/e2e: the stack stops before other packages' tests run.
@pytest_asyncio.fixture(scope="package", loop_scope="session")
async def ui_stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[UiStack]:
    stack = EmbeddedStack(
        StackConfig(
            temporal_port=free_port(),
            ui_port=free_port(),
            sim_port=free_port(),
            state_dir=tmp_path_factory.mktemp("refunds-ui-state"),
            # Slow polls: an `awaiting` Paynow refund stays NEW for 20 reads (about a minute).
            poll_initial_s=2.0,
            poll_max_s=3.0,
        )
    )
    async with running(stack) as ui:
        yield ui


@asynccontextmanager
async def running(stack: EmbeddedStack) -> AsyncIterator[UiStack]:
    """``stack`` started (a start failure fails the test with the log's tail), with a client
    and an HTTP client for its simulators; stopped on the way out."""
    async with started(stack):
        client = await RefundClient.connect(stack.settings())
        async with httpx.AsyncClient(base_url=stack.sim_url, timeout=10) as http:
            yield UiStack(stack, client, http)


@pytest.fixture(scope="package")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    _require(CHROMIUM)
    _require(CHROMEDRIVER)
    # Belt and braces: Selenium Manager must never download a driver or a browser.
    os.environ["SE_OFFLINE"] = "true"
    profile = tmp_path_factory.mktemp("chromium-profile")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    service = Service(executable_path=str(CHROMEDRIVER))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="package")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Screenshots:
    if os.environ.get(UPDATE_SCREENSHOTS_ENV) == "1":
        DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
        return Screenshots(DOCS_IMAGES)
    return Screenshots(tmp_path_factory.mktemp("ui-screenshots"))
