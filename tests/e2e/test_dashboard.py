"""The dashboard in a real browser: headless Chromium (Debian's) driven by selenium.

``statemachine serve`` runs as a user runs it (a real process, port and SQLite file, its worker
in the same process). The test starts ``expense-approval`` from the dashboard's start form,
opens its instance page while the instance waits for ``managerDecision``, then sends that event
through the API, not the page: the page learns of it only over its SSE stream, and the next
steps must turn green without a reload. The server needs a token, given to the page in its link
(``/?token=``): the stream opens with a single-use ticket, and the token never reaches the
server's log. The final page is saved in the test's tmp dir, and as
``docs/dashboard-instance.png`` (the README's screenshot) when UPDATE_SCREENSHOT is set.

Needs ``/usr/bin/chromium`` and ``/usr/bin/chromedriver`` (Debian's ``chromium`` and
``chromium-driver``; ``.ci/run`` installs them): skipped without them, failed in CI.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.serving import free_port, wait_until_up

pytestmark = pytest.mark.slow  # worker processes: run first (conftest)

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / "docs" / "dashboard-instance.png"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",  # we run as root in CI
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1000",
    "--force-device-scale-factor=1",
    "--lang=en-US",
]
INSTALL_HINT = "apt-get install chromium chromium-driver (.ci/run does)"
COMPLETED_RGB = "rgb(46, 157, 91)"  # --completed in style.css
LIVE_SECONDS = 10.0  # how long a step may take to turn green after the event
TOKEN = "e2e-dashboard-token-4b1d"


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _unavailable(reason: str) -> None:
    """Fail in CI (the browser is part of the test setup there), skip elsewhere."""
    if _in_ci():
        pytest.fail(f"{reason}: the dashboard e2e test needs it in CI; {INSTALL_HINT}")
    pytest.skip(f"{reason}; {INSTALL_HINT}")


@contextlib.contextmanager
def serving(
    tmp_path: Path, port: int, log: Path, definitions: str = "definitions"
) -> Iterator[str]:
    """``statemachine serve`` (with a token) on ``port``; stopped with SIGTERM, killed if need be."""
    env = {**os.environ, "STATEMACHINE_TOKEN": TOKEN}
    env.pop("STATEMACHINE_DB", None)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "statemachine", "serve",
             "--db", f"sqlite:///{tmp_path}/e2e.db", "--create",
             "--definitions", definitions, "--actions", "examples.actions:ShopActions",
             "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(proc, url, log)
        yield url
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A running ``statemachine serve`` for one test."""
    log = tmp_path / "serve.log"
    with serving(tmp_path, free_port(), log) as url:
        yield url, log


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """Headless Chromium through chromedriver, with a fresh profile; quit however the test ends."""
    for binary in (CHROMIUM, CHROMEDRIVER):
        if not os.access(binary, os.X_OK):
            _unavailable(f"{binary} is not installed")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _unavailable("selenium is not installed (pip install -e '.[dev]')")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in [*CHROMIUM_ARGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"]:
        options.add_argument(arg)
    # an explicit driver path: selenium-manager (which would download one) is not used
    service = Service(CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    try:
        driver.set_page_load_timeout(30)
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(tmp_path / "chromium-profile", ignore_errors=True)


def wait_for(what: str, check: Callable[[], Any], timeout: float, log: Path | None = None) -> Any:
    """Poll ``check`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            extra = f"\nserver log:\n{log.read_text()}" if log else ""
            pytest.fail(f"timed out after {timeout:.1f}s waiting for {what}{extra}")
        time.sleep(0.05)


def fresh(what: str, act: Callable[[], Any], timeout: float = 15) -> Any:
    """Do ``act`` (find elements and use them), again from the start if the page re-rendered
    one of them in between (a live update redraws the header, the graph and the panels)."""
    from selenium.common.exceptions import StaleElementReferenceException

    deadline = time.monotonic() + timeout
    while True:
        try:
            return act()
        except StaleElementReferenceException:
            if time.monotonic() > deadline:
                pytest.fail(f"{what}: the page kept re-rendering it for {timeout:.0f}s")
            time.sleep(0.05)


def node_status(driver: Any, path: str) -> str | None:
    status: str | None = driver.execute_script(
        'const n = document.querySelector(`.node[data-path="${arguments[0]}"]`);'
        "return n ? (n.dataset.status || '') : null;",
        path,
    )
    return status


@pytest.mark.timeout(180)
def test_dashboard_shows_a_step_turning_green_live(
    browser: Any, server: tuple[str, Path], tmp_path: Path
) -> None:  # browser first: without Chromium, skip before starting the server
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    url, log = server
    driver = browser

    # the instance list, with its start form
    driver.get(url + f"/?token={TOKEN}")
    wait_for("the start form", lambda: driver.find_elements(By.CSS_SELECTOR, ".panel select"), 15)

    def start_one() -> None:
        Select(driver.find_element(By.CSS_SELECTOR, ".panel select")).select_by_value(
            "expense-approval"
        )
        text = driver.find_element(By.CSS_SELECTOR, ".panel textarea")
        text.clear()
        text.send_keys('{"amount": 120, "employee": "ada"}')
        driver.find_element(By.XPATH, "//button[normalize-space()='start']").click()

    fresh("the start form", start_one)

    # the start form opens the new instance's page
    def opened_instance() -> str | None:
        where: str = driver.execute_script("return location.hash")
        return where.removeprefix("#/instances/") if where.startswith("#/instances/") else None

    iid = wait_for("the instance page", opened_instance, 15, log)
    wait_for("the graph", lambda: node_status(driver, "decision") is not None, 15, log)
    # the worker in the server runs submit, then the instance waits for managerDecision
    wait_for("decision waiting", lambda: node_status(driver, "decision") == "waiting", 30, log)
    assert node_status(driver, "submit") == "completed"
    assert node_status(driver, "pay") == ""
    wait_for("the live stream", lambda: driver.find_element(By.ID, "live").text == "live", 15)

    # marks this page load: a reload would drop it
    driver.execute_script("window.__e2e_same_page = true;")
    # the event goes through the API, not the page: only the SSE stream can tell the page
    res = httpx.post(
        f"{url}/api/instances/{iid}/events",
        json={"name": "managerDecision", "data": {"approved": True, "by": "grace"}},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=10,
    )
    assert res.status_code == 202, res.text

    started = time.monotonic()
    for step in ("decision", "route", "pay"):
        wait_for(
            f"step {step} to turn green",
            lambda step=step: node_status(driver, step) == "completed",
            LIVE_SECONDS - (time.monotonic() - started),
            log,
        )
    assert driver.execute_script("return window.__e2e_same_page === true")
    border = driver.execute_script(
        "return getComputedStyle(document.querySelector('.node[data-path=\"pay\"]')).borderTopColor"
    )
    assert border == COMPLETED_RGB
    assert node_status(driver, "reject") == "" and node_status(driver, "escalate") == ""
    # (read by script: the header is re-rendered on every update, so elements go stale)
    badge = "return document.querySelector('h1 .badge')?.textContent"
    wait_for("the instance badge", lambda: driver.execute_script(badge) == "completed", 5, log)

    # pick a step, so the screenshot shows its details too
    fresh(
        "the decision node",
        lambda: driver.find_element(By.CSS_SELECTOR, '.node[data-path="decision"]').click(),
    )
    wait_for(
        "the step details",
        lambda: "Step decision" in driver.find_element(By.CSS_SELECTOR, ".layout").text,
        5,
    )
    # the whole page, not cut at the window's bottom
    height, chrome = driver.execute_script(
        "return [document.documentElement.scrollHeight, window.outerHeight - window.innerHeight]"
    )
    driver.set_window_size(1400, height + chrome)
    time.sleep(0.5)  # the details panel and edges settle (edges are redrawn on resize)
    assert driver.save_screenshot(str(tmp_path / "dashboard-instance.png"))
    if os.environ.get("UPDATE_SCREENSHOT"):  # refresh the README's picture on purpose only
        SCREENSHOT.parent.mkdir(exist_ok=True)
        assert driver.save_screenshot(str(SCREENSHOT))

    errors = [entry for entry in driver.get_log("browser") if entry.get("level") == "SEVERE"]
    assert not errors, errors
    text = log.read_text()
    assert "/stream?ticket=[redacted]" in text, text  # the streams opened with tickets
    assert TOKEN not in text, text


@pytest.mark.timeout(180)
def test_dashboard_stream_reopens_with_a_new_ticket(browser: Any, tmp_path: Path) -> None:
    """Tickets are single-use, so EventSource's own retry cannot reconnect: the page does,
    with a fresh ticket, once the server is back (here: restarted on the same port)."""
    from selenium.webdriver.common.by import By

    driver = browser
    port, log = free_port(), tmp_path / "serve.log"
    live = lambda: driver.find_element(By.ID, "live").text  # noqa: E731
    with serving(tmp_path, port, log) as url:
        driver.get(url + f"/?token={TOKEN}")
        wait_for("the live stream", lambda: live() == "live", 15, log)
    wait_for("the page to see the server gone", lambda: live() == "reconnecting", 15, log)
    with serving(tmp_path, port, log) as url:
        wait_for("the stream to reopen", lambda: live() == "live", 20, log)
        res = httpx.post(
            f"{url}/api/workflows/expense-approval/instances",
            json={"input": {"amount": 120, "employee": "ada"}},
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=10,
        )
        assert res.status_code == 201, res.text
        iid = res.json()["id"]
        # the list learns of the new instance over the reopened stream, without a reload
        wait_for("the new instance listed", lambda: iid in driver.page_source, 15, log)
        # a control call with no body (the page sends it as JSON, which the server requires)
        driver.get(url + f"/#/instances/{iid}")
        badge = "return document.querySelector('h1 .badge')?.textContent"
        wait_for("decision waiting", lambda: node_status(driver, "decision") == "waiting", 30, log)
        fresh(
            "the pause button",
            lambda: driver.find_element(By.XPATH, "//button[normalize-space()='pause']").click(),
        )
        wait_for("the paused badge", lambda: driver.execute_script(badge) == "paused", 10, log)
        assert not driver.find_element(By.ID, "flash").text
    text = log.read_text()
    assert text.count("GET /api/stream?ticket=[redacted]") >= 2, text
    assert TOKEN not in text, text


@contextlib.contextmanager
def api_and_worker(tmp_path: Path, log: Path) -> Iterator[str]:
    """``serve --no-worker`` and a separate ``statemachine worker`` on one SQLite file: the page
    sees the worker's progress only through the database."""
    env = {**os.environ, "STATEMACHINE_TOKEN": TOKEN}
    env.pop("STATEMACHINE_DB", None)
    app = ["--db", f"sqlite:///{tmp_path}/split.db", "--create", "--definitions", "definitions"]
    app += ["--actions", "examples.actions:ShopActions"]
    port = free_port()
    procs: list[subprocess.Popen[bytes]] = []
    with log.open("ab") as out:
        for args in (
            ["serve", *app, "--no-worker", "--host", "127.0.0.1", "--port", str(port)],
            ["worker", *app],
        ):
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "statemachine", *args],
                    cwd=ROOT,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(procs[0], url, log)
        yield url
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(10)


@pytest.mark.timeout(180)
def test_dashboard_failures_compensations_children_event_form_and_offline_docs(
    browser: Any, tmp_path: Path
) -> None:
    """A failed row names its step and error, a legend tells the colours, undone saga steps
    are drawn compensated, a parent lists its children (and a child links back), the event
    form (not a prompt box) delivers an event that a separate worker acts on, and /docs draws
    the API from /openapi.json with nothing loaded from elsewhere."""
    from selenium.webdriver.common.by import By

    driver = browser
    log = tmp_path / "serve.log"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    script = driver.execute_script
    with api_and_worker(tmp_path, log) as url:

        def start(name: str, data: dict[str, Any]) -> str:
            res = httpx.post(
                f"{url}/api/workflows/{name}/instances",
                json={"input": data},
                headers=auth,
                timeout=10,
            )
            assert res.status_code == 201, res.text
            iid: str = res.json()["id"]
            return iid

        def status(iid: str) -> str:
            got: str = httpx.get(f"{url}/api/instances/{iid}", headers=auth, timeout=10).json()[
                "status"
            ]
            return got

        trip = start("trip-booking", {"city": "Lisbon", "amount": 20_000})  # the card is declined
        account = start("account-opening", {"email": "ada@example.com"})
        wait_for("the trip to fail", lambda: status(trip) == "failed", 30, log)
        wait_for("the account to open", lambda: status(account) == "completed", 30, log)

        # the list: the failed row says where and why; a legend of the colours
        driver.get(url + f"/?token={TOKEN}")
        row_error = (
            "const a = [...document.querySelectorAll('tbody tr')].find((r) => "
            "r.textContent.includes(arguments[0]));"
            "return a ? a.querySelector('.row-error')?.textContent : null;"
        )
        failed = wait_for("the failed row", lambda: script(row_error, trip), 15, log)
        assert failed.startswith("charge: ") and "card declined" in failed, failed
        legend = script(
            "return [...document.querySelectorAll('.legend .badge')].map(b => b.textContent)"
        )
        assert {"completed", "failed", "compensating", "waiting", "cancelled"} <= set(legend)
        assert driver.save_screenshot(str(tmp_path / "dashboard-list.png"))

        # the saga's undone bookings are drawn compensated
        driver.get(url + f"/#/instances/{trip}")
        wait_for("the graph", lambda: node_status(driver, "book-hotel"), 15, log)
        assert node_status(driver, "book-hotel") == "compensated"
        assert node_status(driver, "book-flight") == "compensated"
        assert node_status(driver, "charge") == "failed"
        assert "compensated (undone)" in driver.find_element(By.CSS_SELECTOR, ".graph .legend").text

        # a parent links to its child, and the child back to its parent
        driver.get(url + f"/#/instances/{account}")
        child_link = ".children a"
        wait_for("the child", lambda: driver.find_elements(By.CSS_SELECTOR, child_link), 15, log)

        def open_child() -> str:
            child = driver.find_element(By.CSS_SELECTOR, child_link)
            text: str = child.text
            child.click()
            return text

        child_id = fresh("the child link", open_child)
        assert child_id.startswith(account)
        wait_for(
            "the child's page",
            lambda: "kyc-check" in script("return document.querySelector('h1')?.textContent || ''"),
            15,
            log,
        )
        parent = driver.find_element(By.CSS_SELECTOR, f'.panel a[href="#/instances/{account}"]')
        assert parent.text == account

        # the event form: what the separate worker does next shows up live, without a reload
        expense = start("expense-approval", {"amount": 120, "employee": "ada"})
        driver.get(url + f"/#/instances/{expense}")
        wait_for("decision waiting", lambda: node_status(driver, "decision") == "waiting", 30, log)
        wait_for("the live stream", lambda: driver.find_element(By.ID, "live").text == "live", 15)
        script("window.__e2e_same_page = true;")

        def send_event() -> None:
            form = driver.find_element(By.CSS_SELECTOR, "form.send-event")
            name, data = (
                form.find_element(By.NAME, "event-name"),
                form.find_element(By.NAME, "event-data"),
            )
            name.clear()
            name.send_keys("managerDecision")
            data.clear()
            data.send_keys('{"approved": true, "by": "grace"}')
            form.find_element(By.XPATH, ".//button[normalize-space()='send event']").click()

        fresh("the event form", send_event)
        for step in ("decision", "route", "pay"):
            wait_for(
                f"step {step} to turn green",
                lambda step=step: node_status(driver, step) == "completed",
                LIVE_SECONDS,
                log,
            )
        assert script("return window.__e2e_same_page === true")
        assert not driver.find_element(By.ID, "flash").text
        badge = "return document.querySelector('h1 .badge')?.textContent"
        wait_for("the instance badge", lambda: script(badge) == "completed", 5, log)
        assert not driver.find_element(By.CSS_SELECTOR, "form.send-event").is_displayed()
        assert driver.save_screenshot(str(tmp_path / "dashboard-event-form.png"))

        # /docs: our own page, drawn from /openapi.json; nothing comes from another origin
        driver.get(url + "/docs")
        ops = "return document.querySelectorAll('.op').length"
        wait_for("the API reference", lambda: script(ops) > 10, 15, log)
        text = driver.find_element(By.ID, "docs").text
        assert "/api/instances/{instance_id}/stream" in text and "Last-Event-ID" in text
        resources = script("return performance.getEntriesByType('resource').map(r => r.name)")
        assert resources and all(r.startswith(url) for r in resources), resources
        assert driver.save_screenshot(str(tmp_path / "dashboard-docs.png"))

        errors = [entry for entry in driver.get_log("browser") if entry.get("level") == "SEVERE"]
        assert not errors, errors
    print(f"screenshots in {tmp_path}")


REPORTS = """id: reports
concurrency: {limit: 2, key: "${{ input.customer }}"}
priority: 5
schedules:
  - cron: "0 2 * * *"
    timezone: Europe/Paris
steps:
  - id: a
    type: pass
"""


@pytest.mark.timeout(180)
def test_dashboard_header_shows_the_workflows_flow_control(browser: Any, tmp_path: Path) -> None:
    """The instance page's header says what decides when the workflow's instances run: its
    concurrency limit and key, its priority, and its schedules with their next fire times
    (from /api/schedules); a workflow with none of it shows no such line."""

    driver = browser
    script = driver.execute_script
    folder = tmp_path / "defs"
    folder.mkdir()
    (folder / "reports.yaml").write_text(REPORTS)
    (folder / "plain.yaml").write_text("id: plain\nsteps:\n  - id: a\n    type: pass\n")
    log = tmp_path / "serve.log"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with serving(tmp_path, free_port(), log, str(folder)) as url:

        def start(name: str) -> str:
            res = httpx.post(f"{url}/api/workflows/{name}/instances",
                             json={"input": {"customer": "c-1"}}, headers=auth, timeout=10)  # fmt: skip
            assert res.status_code == 201, res.text
            iid: str = res.json()["id"]
            return iid

        (sched,) = httpx.get(f"{url}/api/schedules", headers=auth, timeout=10).json()
        shown = "return document.querySelector('.flow-control')?.innerText"
        driver.get(url + f"/?token={TOKEN}#/instances/{start('reports')}")
        text = wait_for("the flow control line", lambda: script(shown), 15, log)
        next_at = script("return new Date(arguments[0]).toLocaleString()", sched["next_at"])
        assert text.splitlines() == [
            "flow control: at most 2 running per ${{ input.customer }} · priority 5",
            f"scheduled: 0 2 * * * (Europe/Paris) · next {next_at}",
        ], text
        assert "key 'c-1'" not in text  # the workflow's, not the instance's: that is in the list
        assert driver.save_screenshot(str(tmp_path / "dashboard-flow-control.png"))

        driver.get(url + f"/?token={TOKEN}#/instances/{start('plain')}")
        badge = "return document.querySelector('h1')?.textContent || ''"
        wait_for("the plain instance's header", lambda: "plain" in script(badge), 15, log)
        assert script("return document.querySelector('.flow-control')") is None

        errors = [entry for entry in driver.get_log("browser") if entry.get("level") == "SEVERE"]
        assert not errors, errors
    print(f"screenshots in {tmp_path}")
