"""The built-in page once users exist, in real headless Chromium: it asks to sign in (the API answers 401), refuses
a wrong password with the API's message, and after signing in shows the tiles painted from the API, the user's
name and role, and signs out again (the token is revoked)."""

from __future__ import annotations

from rmm_monitor.kpi import load_catalog

from support.browser import Browser
from support.paths import REPO
from support.people import PASSWORDS, make_people
from support.workers import http_json

SCREENSHOT = REPO / "build" / "artifacts" / "page-sign-in.png"


def fill_and_submit(browser, user: str, password: str) -> None:
    browser.run(
        "document.getElementById('signin-user').value = arguments[0];"
        "document.getElementById('signin-password').value = arguments[1];"
        "document.getElementById('signin-submit').click();",
        user,
        password,
    )


def test_the_page_signs_in_and_out(broker, worker_factory, tmp_path):
    db = tmp_path / "page.duckdb"
    make_people(db)
    w = worker_factory(broker.bootstrap, db=db, RMM_DQ_SECONDS="0").start()
    catalog = load_catalog()
    with Browser(tmp_path) as browser:
        browser.get(w.url + "/")
        browser.wait_for("return !document.getElementById('signin').hidden", what="the sign-in form")
        assert browser.run("return document.getElementById('content').hidden") is True
        fill_and_submit(browser, "audit.liu", "not-the-password")
        browser.wait_for(
            "return document.getElementById('signin-error').textContent.includes('unknown user or wrong password')",
            what="the refusal",
        )
        fill_and_submit(browser, "audit.liu", PASSWORDS["audit.liu"])
        browser.wait_for(
            "return document.querySelectorAll('.tile[data-loaded]').length === %d" % len(catalog),
            what="every tile painted from /api/kpis after signing in",
        )
        browser.wait_for("return !document.getElementById('user').hidden", what="the signed-in user")
        assert browser.run("return document.getElementById('user').textContent").startswith("Liu Yang (viewer)")
        assert browser.run("return document.getElementById('signin').hidden") is True
        token = browser.run("return sessionStorage.getItem('rmm-token')")
        assert http_json(w.url + "/api/whoami", token=token)["user_id"] == "audit.liu"
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        browser.screenshot(SCREENSHOT)
        browser.run("document.getElementById('signout').click();")
        browser.wait_for("return !document.getElementById('signin').hidden", what="the sign-in form again")
    try:
        http_json(w.url + "/api/whoami", token=token)
        raise AssertionError("the token still works after signing out")
    except Exception as exc:  # urllib's HTTPError 401
        assert "401" in str(exc)
