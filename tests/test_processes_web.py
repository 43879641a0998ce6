"""Ring 3: the web page in a real browser (headless Chromium through selenium).

Opened on a follower, the page shows the leader; the leader is SIGKILLed and the page
shows the new one without a reload; a filter in the URL survives a reload; a failed
task retried from the page ends `succeeded`. A screenshot is written next to the
test's other files (its path is printed). Skipped, with the reason, where selenium,
Chromium or its driver is missing (`.ci/run` installs them).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from tests.chaos import START_TIMEOUT, request_once
from tests.conftest import ClusterFactory

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
WAIT = 10.0
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or DRIVER is None, reason="no chromium or chromedriver on this machine"
)


@pytest.fixture
def browser() -> Any:
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for flag in FLAGS:
        options.add_argument(flag)
    options.binary_location = CHROMIUM
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_window_size(1280, 1400)
    try:
        yield driver
    finally:
        driver.quit()


def _text(driver: Any, selector: str) -> str:
    from selenium.webdriver.common.by import By

    return str(driver.find_element(By.CSS_SELECTOR, selector).text)


def _until(driver: Any, condition: Any, what: str, timeout: float = WAIT) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout, poll_frequency=0.05).until(lambda d: condition(), what)


def test_the_page_follows_the_cluster_live_keeps_its_filters_and_retries_a_task(
    cluster_factory: ClusterFactory, browser: Any, tmp_path: Path
) -> None:
    cluster = cluster_factory(3, task_modules=("examples.tasks",), retry_base=0.05)
    cluster.wait_for_leader(expected=3, timeout=START_TIMEOUT)
    page = cluster.url(1)
    browser.get(page + "/")
    _until(browser, lambda: _text(browser, "#leader").startswith("leader 3 "), "leader 3 shown")

    cluster.kill(3)
    killed = time.monotonic()
    _until(browser, lambda: _text(browser, "#leader").startswith("leader 2 "), "leader 2 shown")
    print(f"the page showed the new leader {time.monotonic() - killed:.2f} s after the kill")

    marker = tmp_path / "input.txt"
    body = {"kind": "needs_file", "args": {"path": str(marker)}, "max_attempts": 1}
    status, data = request_once(cluster, 1, "POST", "/tasks", json.dumps(body).encode())
    assert status == 201, data
    task = json.loads(data)["id"]

    def state() -> str:
        return str(json.loads(request_once(cluster, 1, "GET", f"/tasks/{task}")[1])["state"])

    cluster.wait_for(lambda: state() == "failed", WAIT, "the task to fail")
    browser.get(page + "/?state=failed&kind=needs_file")
    browser.refresh()  # the filter lives in the URL: it survives a reload
    from selenium.webdriver.common.by import By

    assert browser.find_element(By.ID, "f-state").get_attribute("value") == "failed"
    assert browser.find_element(By.ID, "f-kind").get_attribute("value") == "needs_file"
    retry = f'button.retry[data-id="{task}"]'
    _until(browser, lambda: bool(browser.find_elements(By.CSS_SELECTOR, retry)), "a retry button")
    marker.write_text("now it exists")
    browser.find_element(By.CSS_SELECTOR, retry).click()
    cluster.wait_for(lambda: state() == "succeeded", WAIT, "the retried task to succeed")

    browser.get(f"{page}/ui/tasks/{task}")
    _until(browser, lambda: "succeeded" in _text(browser, "#task-title"), "the task page")
    outcomes = [row.text for row in browser.find_elements(By.CSS_SELECTOR, "#attempts tbody tr")]
    assert len(outcomes) == 2 and "failed" in outcomes[0] and "succeeded" in outcomes[1]
    shot = tmp_path / "web-page.png"
    browser.get(page + "/")
    _until(browser, lambda: _text(browser, "#leader").startswith("leader 2 "), "the overview")
    browser.save_screenshot(str(shot))
    print(f"screenshot: {shot}")
    assert shot.stat().st_size > 10_000


def test_with_tokens_the_page_asks_for_one_and_then_shows_the_cluster_live(
    cluster_factory: ClusterFactory, browser: Any
) -> None:
    from selenium.webdriver.common.by import By

    from peer.tokens import AuthConfig

    token = "web-" + "t" * 30
    auth = AuthConfig().with_token("viewer", "read", token)
    cluster = cluster_factory(3, token=token, auth=auth)
    cluster.wait_for_leader(expected=3, timeout=START_TIMEOUT)
    browser.get(cluster.url(1) + "/")
    login = browser.find_element(By.ID, "login")
    _until(browser, login.is_displayed, "the sign-in form")
    assert "token" in _text(browser, "#login-message")
    assert _text(browser, "#members tbody") == ""  # nothing shown without a token

    browser.find_element(By.ID, "token").send_keys("wrong-" + "x" * 20)
    browser.find_element(By.CSS_SELECTOR, "#login button").click()
    _until(browser, lambda: "unknown token" in _text(browser, "#login-message"), "a refusal")

    browser.find_element(By.ID, "token").send_keys(token)
    browser.find_element(By.CSS_SELECTOR, "#login button").click()
    _until(browser, lambda: _text(browser, "#leader").startswith("leader 3 "), "leader 3 shown")
    _until(browser, lambda: _text(browser, "#live") == "live", "the live stream")
    assert not login.is_displayed()
    rows = browser.find_elements(By.CSS_SELECTOR, "#members tbody tr")
    assert len(rows) == 3
    browser.refresh()  # the token lives in this tab's session: a reload keeps it
    _until(browser, lambda: _text(browser, "#leader").startswith("leader 3 "), "after a reload")
    assert not browser.find_element(By.ID, "login").is_displayed()
    stored = browser.execute_script("return sessionStorage.getItem('bullyq-token')")
    assert stored == token
