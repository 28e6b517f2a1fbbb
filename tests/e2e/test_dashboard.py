"""The dashboard in a real browser, after a demo run.

``flexmarket demo --households 12`` fills a fresh SQLite file (a cleared, metered, settled day with
statements); ``uvicorn`` serves that file as ``flexmarket serve`` would; Playwright drives Debian's
chromium (``/usr/bin/chromium``, never a downloaded browser). Keys are issued straight into the demo's
database, as an operator would hand them out.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, sync_playwright
from sqlalchemy import func, select

from market.auth.models import ApiKey
from market.auth.principal import Scope
from market.auth.service import issue_key
from market.clearing.models import ClearingRun, FlexOrderAward, PointPrice
from market.core.contexts import import_models
from market.core.db import make_engine, make_session_factory, utcnow
from market.orders.models import FlexOffer
from market.participants.models import Participant, Role, Site
from settlement.statements.models import Statement
from settlement.statements.render import csv_header

pytestmark = pytest.mark.e2e

CHROMIUM = os.environ.get("FLEX_E2E_CHROMIUM", "/usr/bin/chromium")
PEPPER = "e2e-dashboard-pepper-0123456789abcdef"
BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class World:
    base_url: str
    database_url: str
    market_id: uuid.UUID
    operator_key: str
    household_key: str
    household_offer: uuid.UUID
    household_awarded: int
    household_meter: str
    other_offer: uuid.UUID
    other_meter: str
    finance_key: str
    statement_id: uuid.UUID
    currency: str
    prices: tuple[Decimal, ...]
    """Every price of the market's clearing where something was procured, ascending."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env(database_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEX_")}
    return env | {"FLEX_DATABASE_URL": database_url, "FLEX_BROKER_URL": "in-process", "FLEX_API_KEY_PEPPER": PEPPER}


def _key(session: object, participant: Participant, scopes: list[Scope]) -> str:
    _, token = issue_key(session, participant, "e2e dashboard", scopes, PEPPER)  # type: ignore[arg-type]
    return token


def _issue_keys(database_url: str, base_url: str) -> World:
    import_models()
    engine = make_engine(database_url)
    with make_session_factory(engine)() as session:
        operator = session.scalars(select(Participant).where(Participant.role == Role.OPERATOR)).first()
        assert operator is not None, "the demo made no operator"
        awarded = select(FlexOrderAward.offer_id)
        # Households with an award first, so the page shows awards and a delivery chart.
        sellers = session.execute(
            select(FlexOffer.seller_id, FlexOffer.id, FlexOffer.market_id)
            .join(Participant, Participant.id == FlexOffer.seller_id)
            .where(Participant.role == Role.HOUSEHOLD, FlexOffer.site_id.is_not(None))
            .order_by(FlexOffer.id.not_in(awarded), FlexOffer.submitted_at, FlexOffer.id)
        ).all()
        by_seller: dict[uuid.UUID, tuple[uuid.UUID, uuid.UUID]] = {}
        for seller_id, offer_id, market_id in sellers:
            by_seller.setdefault(seller_id, (offer_id, market_id))
        assert len(by_seller) >= 2, "the demo needs two households that offer directly"
        (mine, (my_offer, market_id)), (other, (other_offer, _)) = list(by_seller.items())[:2]

        def meter(owner: uuid.UUID) -> str:
            code = session.scalars(select(Site.meter_code).where(Site.owner_id == owner)).first()
            assert code is not None
            return code

        run = session.scalars(select(ClearingRun).where(ClearingRun.market_id == market_id)).one()
        prices = session.scalars(
            select(PointPrice.price_per_mwh).where(PointPrice.run_id == run.id, PointPrice.procured_kw > 0)
        ).all()
        statement = session.scalars(select(Statement).order_by(Statement.sequence)).first()
        assert statement is not None, "the demo issued no statement"
        household = session.get(Participant, mine)
        finance = session.get(Participant, statement.participant_id)
        assert household is not None
        assert finance is not None
        world = World(
            base_url=base_url,
            database_url=database_url,
            market_id=market_id,
            operator_key=_key(session, operator, list(Scope)),
            household_key=_key(session, household, [Scope.TRADE]),
            household_offer=my_offer,
            household_awarded=session.scalar(select(func.count()).where(FlexOrderAward.offer_id == my_offer)) or 0,
            household_meter=meter(mine),
            other_offer=other_offer,
            other_meter=meter(other),
            finance_key=_key(session, finance, [Scope.FINANCE]),
            statement_id=statement.id,
            currency=statement.currency,
            prices=tuple(sorted(prices)),
        )
        session.commit()
    engine.dispose()
    return world


def _wait_until_up(base_url: str, server: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(
                f"uvicorn exited with {server.returncode}: {server.stderr.read().decode() if server.stderr else ''}"
            )
        try:
            if httpx.get(f"{base_url}/health", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    pytest.fail(f"the dashboard server did not answer on {base_url} within {timeout_s} s")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium); .ci/run does")
    workdir = tmp_path_factory.mktemp("dashboard")
    database_url = f"sqlite:///{workdir / 'demo.db'}"
    env = _env(database_url)
    demo = subprocess.run(  # noqa: S603 - the venv's own flexmarket
        [str(BIN / "flexmarket"), "demo", "--households", "12"],
        cwd=workdir,
        env=env,
        capture_output=True,
        timeout=180,
        check=False,
    )
    assert demo.returncode == 0, demo.stdout.decode()[-3000:] + demo.stderr.decode()[-3000:]
    port = _free_port()
    base_url = f"http://127.0.0.1:{port}"
    data = _issue_keys(database_url, base_url)
    server = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [
            sys.executable,
            "-m",
            "uvicorn",
            "market.core.app:create_app",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        cwd=workdir,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_until_up(base_url, server)
        yield data
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium); .ci/run does")
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield launched
        launched.close()


def _sign_in(browser: Browser, world: World, key: str) -> Page:
    context = browser.new_context(accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(15_000)
    page.goto(f"{world.base_url}/dashboard")
    page.fill("input[name=api_key]", key)
    page.click("#login button")
    page.wait_for_selector("#home-links")
    (cookie,) = context.cookies()
    assert (cookie["httpOnly"], cookie["sameSite"], cookie["path"]) == (True, "Strict", "/dashboard")
    return page


def test_the_operator_sees_the_price_heat_map_after_a_demo_run(world: World, browser: Browser) -> None:
    page = _sign_in(browser, world, world.operator_key)
    page.click(f"a[href='/dashboard/markets/{world.market_id}']")
    page.wait_for_selector("table.heatmap")
    assert page.locator("ul.tree li").count() >= 3  # substation, feeders, ...
    assert page.locator("#clearing-run td").first.inner_text() != ""
    prices = [
        Decimal(p)
        for p in page.locator("table.heatmap td.cell[data-price]").evaluate_all(
            "cells => cells.map(c => c.dataset.price)"
        )
    ]
    assert prices, "the heat map shows no priced cell"
    assert sorted(prices) == list(world.prices)  # one cell per procured (point, ISP, direction), price as stored
    # Colours span the legend: the cheapest and dearest cells differ (unless every price is equal).
    colours = set(
        page.locator("table.heatmap td.cell[data-price]").evaluate_all(
            "cells => cells.map(c => getComputedStyle(c).backgroundColor)"
        )
    )
    assert len(colours) >= (2 if len(set(prices)) > 1 else 1)
    assert page.locator(".legend").count() == 1
    # For a look by eye (the report describes it); /tmp so it outlives the test's tmp_path.
    page.screenshot(path="/tmp/dashboard-operator-market.png", full_page=True)  # noqa: S108
    page.click("text=settlement runs")
    page.wait_for_selector("#settlement-runs")
    assert "initial" in page.locator("#settlement-runs").inner_text()
    page.context.close()


def test_a_household_sees_only_its_own_offers_and_awards(world: World, browser: Browser) -> None:
    page = _sign_in(browser, world, world.household_key)
    page.click("a[href='/dashboard/me']")
    page.wait_for_selector("#my-offers")
    content = page.content()
    assert str(world.household_offer) in page.locator("#my-offers").inner_text()
    assert world.household_meter in page.locator("#my-sites").inner_text()
    assert str(world.other_offer) not in content
    assert world.other_meter not in content
    assert world.household_awarded > 0
    assert str(world.household_offer) in page.locator("#my-awards").inner_text()
    page.goto(f"{world.base_url}/dashboard/me/delivery")
    assert page.locator("h1").inner_text() == "My delivery vs baseline"
    assert str(world.other_offer) not in page.content()
    chart = page.locator(f".delivery[data-offer='{world.household_offer}'] svg")
    assert chart.count() == 1
    assert chart.locator("polyline[data-series=baseline]").count() >= 1
    assert chart.locator("polyline[data-series=actual]").count() >= 1
    # Operator pages and statements need what a trade key lacks: refused, as by the API.
    response = page.goto(f"{world.base_url}/dashboard/markets/{world.market_id}")
    assert response is not None
    assert response.status == 403
    response = page.goto(f"{world.base_url}/dashboard/statements")
    assert response is not None
    assert response.status == 403
    # Signing out forgets the key: the next page asks for one again.
    page.goto(f"{world.base_url}/dashboard")
    page.click("header form button")
    page.wait_for_selector("form#login")
    assert page.context.cookies() == []
    page.goto(f"{world.base_url}/dashboard/me")
    assert page.locator("form#login").count() == 1
    page.context.close()


def test_a_revoked_key_is_refused_on_the_next_page(world: World, browser: Browser) -> None:
    engine = make_engine(world.database_url)
    with make_session_factory(engine)() as session:
        household = session.scalars(
            select(Participant)
            .join(ApiKey, ApiKey.participant_id == Participant.id)
            .where(Participant.role == Role.HOUSEHOLD)
        ).first()
        assert household is not None
        key_row, token = issue_key(session, household, "to revoke", [Scope.TRADE], PEPPER)
        session.commit()
        page = _sign_in(browser, world, token)
        key_row.revoked_at = utcnow()
        session.merge(key_row)
        session.commit()
    engine.dispose()
    page.goto(f"{world.base_url}/dashboard/me")
    assert page.url.rstrip("/").endswith("/dashboard")
    assert page.locator("form#login").count() == 1
    page.fill("input[name=api_key]", token)
    page.click("#login button")
    assert "unknown or revoked" in page.locator("#login-error").inner_text()
    page.context.close()


def test_a_finance_user_downloads_a_statement_as_csv_and_pdf(world: World, browser: Browser) -> None:
    page = _sign_in(browser, world, world.finance_key)
    page.click("a[href='/dashboard/statements']")
    page.wait_for_selector("#statements")
    with page.expect_download() as csv_download:
        page.click(f"a.download[data-format=csv][href*='{world.statement_id}']")
    csv_bytes = Path(csv_download.value.path()).read_bytes()
    header = next(csv.reader(io.StringIO(csv_bytes.decode())))
    assert header == csv_header(world.currency)
    with page.expect_download() as pdf_download:
        page.click(f"a.download[data-format=pdf][href*='{world.statement_id}']")
    pdf_bytes = Path(pdf_download.value.path()).read_bytes()
    assert pdf_bytes.startswith(b"%PDF")
    # The same bytes as the API's download.
    api = httpx.get(
        f"{world.base_url}/api/v1/statements/{world.statement_id}/document",
        params={"format": "csv"},
        headers={"Authorization": f"Bearer {world.finance_key}"},
    )
    assert api.status_code == 200
    assert api.content == csv_bytes
    page.context.close()
