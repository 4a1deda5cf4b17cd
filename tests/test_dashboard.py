"""The dashboard (web/), served by Envoy itself, driven in headless Chromium against the real Envoy
and server: sign-in through supabase-js's own stored session, bootstrap, keys, usage charts and the
playground. Screenshots of each step land in var/artifacts/dashboard/."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Locator, Page, expect

from server.edge.config import static_files
from tests.conftest import gateway_settings, make_settings
from tests.support.browser import browser_session, chromium, inject_supabase_session
from tests.support.fake_provider import FakeProvider, provider_settings
from tests.support.gateway import Gateway, running_gateway
from tests.support.supabase import SupabaseStandIn

PUBLISHABLE_KEY = "sb_publishable_dashboard_tests"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as (_playwright, running):
        yield running


@pytest.fixture(scope="module")
def site(
    tmp_path_factory: pytest.TempPathFactory, supabase: SupabaseStandIn, fake: FakeProvider
) -> Iterator[Gateway]:
    """A gateway with sign-in through the Supabase stand-in and the fake provider behind `auto`.
    One backend is enough here: the storage under these pages is tested on both."""
    database = tmp_path_factory.mktemp("dashboard") / "dashboard.sqlite3"
    settings = gateway_settings(
        f"sqlite:///{database}",
        supabase,
        SUPABASE_PUBLISHABLE_KEY=PUBLISHABLE_KEY,
        **provider_settings(fake),
    )
    with running_gateway(settings) as running:
        yield running


def cells(page: Page, prefix: str) -> Locator:
    """The cells of a key's row (label, prefix, quota, used, remaining, last used, active, action)."""
    return page.locator(f'#keys-table tbody tr[data-prefix="{prefix}"] > *')


def send_in_playground(page: Page, profile: str, message: str, api: str | None = None) -> None:
    if api is not None:
        page.get_by_label("API", exact=True).select_option(api)
    page.get_by_label("Routing profile").select_option(profile)
    page.get_by_label("Message").fill(message)
    page.get_by_role("button", name="Send").click()
    expect(page.locator("#status")).not_to_have_text("Sending…")  # answered or refused, and redrawn


def unlabelled_controls(page: Page) -> list[str]:
    """Inputs, selects and text areas with no label a screen reader would read."""
    result: list[str] = page.evaluate(
        """() => [...document.querySelectorAll('input, select, textarea')]
              .filter((el) => el.labels.length === 0 && !el.getAttribute('aria-label'))
              .map((el) => el.id || el.outerHTML)"""
    )
    return result


def wider_than_the_screen(page: Page) -> list[str]:
    """What makes the page scroll sideways: its width, and the elements sticking out past the
    viewport's right edge (tables scroll inside their own box and do not count)."""
    result: list[str] = page.evaluate(
        """() => document.documentElement.scrollWidth <= window.innerWidth ? [] :
              [`page ${document.documentElement.scrollWidth}px > ${window.innerWidth}px`,
               ...[...document.querySelectorAll('body *')]
                 .filter((el) => !el.closest('.table-scroll') && el.getClientRects().length
                                 && el.getBoundingClientRect().right > window.innerWidth + 1)
                 .map((el) => el.id || el.tagName + '.' + el.className)]"""
    )
    return result


def test_a_person_signs_in_creates_a_key_uses_it_and_deactivates_it(
    browser: Browser, site: Gateway, supabase: SupabaseStandIn
) -> None:
    user_id, email = str(uuid.uuid4()), "ada@example.com"
    with browser_session(browser) as session:
        session.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=site.base_url)
        inject_supabase_session(session.context, supabase.url, supabase.session(user_id, email))
        page = session.page
        page.goto(site.base_url + "/")

        # Signed in: supabase-js found its session; the first visit bootstraps the account.
        expect(page.locator("#user-email")).to_have_text(email)
        expect(page.get_by_role("button", name="Sign out")).to_be_visible()
        session.screenshot("signed-in")
        first_secret = page.locator("#new-secret-value")
        expect(first_secret).to_have_value(re.compile(r"^cc_live_"))
        expect(page.locator("#new-secret-label")).to_have_text("Default")
        expect(page.locator("#balance")).to_have_text("100")
        session.screenshot("bootstrapped")
        assert unlabelled_controls(page) == []

        # Create a key: its secret is shown once, with a warning and a copy button.
        page.get_by_role("button", name="I saved it").click()
        expect(page.locator("#new-secret")).to_be_hidden()
        page.get_by_label("Label").fill("Playground key")
        page.get_by_label("Quota in credits").fill("5")
        page.get_by_role("button", name="Create key").click()
        expect(page.locator("#new-secret-label")).to_have_text("Playground key")
        secret = page.locator("#new-secret-value").input_value()
        assert secret.startswith("cc_live_") and len(secret) == len("cc_live_") + 43
        expect(page.locator("#new-secret .warning")).to_contain_text("shown only once")
        page.get_by_role("button", name="Copy", exact=True).click()
        expect(page.locator("#copy-status")).to_have_text("Copied to the clipboard.")
        assert page.evaluate("navigator.clipboard.readText()") == secret
        session.screenshot("key-created")

        # Listed with prefix, quota, used, last used and active; the secret itself is nowhere.
        prefix = secret[:16]
        expect(page.locator(f'#keys-table tbody tr[data-prefix="{prefix}"]')).to_be_visible()
        expect(cells(page, prefix)).to_have_text(
            ["Playground key", prefix, "5", "0", "5", "never", "yes", "Deactivate"]
        )
        expect(page.locator("#keys-table tbody tr")).to_have_count(2)
        assert secret not in page.locator("#keys-table").inner_text()
        session.screenshot("key-listed")

        # The playground sends a chat with that key and a profile, and shows how it was routed.
        expect(page.get_by_label("API key", exact=True)).to_have_value(secret)
        send_in_playground(page, "auto", "hi!")
        expect(page.locator("#playground-answer")).to_have_text("Hello from the fake provider!")
        expect(page.locator("#route-tier")).to_have_text("SIMPLE")
        expect(page.locator("#route-model")).not_to_have_text("—")
        expect(page.locator("#route-provider")).not_to_have_text("—")
        billed = float(page.locator("#route-credits").inner_text())
        assert billed > 0
        session.screenshot("playground-answered")

        # The charts draw what /api/usage now reports, and the key shows what it spent.
        expect(page.locator(f'#chart-keys rect[data-series="Playground key ({prefix})"]')).to_have_count(1)
        model = page.locator("#route-model").inner_text()
        expect(page.locator(f'#chart-models rect[data-series="{model}"]')).to_have_count(1)
        expect(page.locator("#usage-summary")).to_contain_text("1 requests")
        expect(cells(page, prefix).nth(5)).not_to_have_text("never")
        assert float(cells(page, prefix).nth(3).inner_text()) == pytest.approx(billed)
        page.get_by_label("Show").select_option("requestCount")
        expect(page.locator("#chart-models figcaption")).to_have_text("Requests per day, by model")
        session.screenshot("usage-charts")

        # Deactivation asks first; Escape (keyboard) cancels, the dialog's button confirms.
        deactivate = page.get_by_role("button", name=f"Deactivate Playground key ({prefix})")
        deactivate.focus()
        page.keyboard.press("Enter")
        dialog = page.get_by_role("dialog")
        expect(dialog).to_be_visible()
        expect(dialog).to_contain_text(f"Deactivate Playground key ({prefix})?")
        session.screenshot("confirm-deactivation")
        page.keyboard.press("Escape")
        expect(dialog).to_be_hidden()
        expect(deactivate).to_be_focused()
        expect(cells(page, prefix).nth(6)).to_have_text("yes")
        deactivate.click()
        dialog.get_by_role("button", name="Deactivate").click()
        expect(page.locator("#status")).to_have_text(f"Playground key ({prefix}) is deactivated.")
        expect(cells(page, prefix).nth(6)).to_have_text("no")
        expect(deactivate).to_have_count(0)
        session.screenshot("deactivated")

        # The playground now gets the gateway's 401 for that key, and says so.
        send_in_playground(page, "auto", "hi again")
        error = page.locator("#playground-error")
        expect(error).to_contain_text("HTTP 401")
        expect(error).to_contain_text("deactivated")
        expect(page.locator("#playground-result")).to_be_hidden()
        session.screenshot("playground-refused")

        page.set_viewport_size({"width": 390, "height": 844})
        expect(page.get_by_role("heading", name="API keys")).to_be_visible()
        assert wider_than_the_screen(page) == []
        session.screenshot("narrow")

        page.get_by_role("button", name="Sign out").click()
        expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        expect(page.locator("#signed-in")).to_be_hidden()

        assert session.outside_requests() == []
        supabase_calls = [url for url in session.requested if url.startswith(supabase.url)]
        assert supabase_calls and all("/auth/v1/" in url for url in supabase_calls)
    with httpx.Client(base_url=site.base_url) as http:
        token = supabase.es256(supabase.claims(user_id, email=email))
        me = http.get("/api/me", headers={"authorization": f"Bearer {token}"}).json()
    assert me["bootstrapped"] is True and me["keyCount"] == 2


def test_the_playground_answers_through_each_api(
    browser: Browser, site: Gateway, supabase: SupabaseStandIn
) -> None:
    with browser_session(browser) as session:
        inject_supabase_session(
            session.context, supabase.url, supabase.session(str(uuid.uuid4()), "joy@example.com")
        )
        page = session.page
        page.goto(site.base_url + "/")
        expect(page.locator("#new-secret-value")).to_have_value(re.compile(r"^cc_live_"))
        spent = 0.0
        for api, path in (
            ("chat", "/v1/chat/completions"),
            ("responses", "/v1/responses"),
            ("messages", "/v1/messages"),
        ):
            send_in_playground(page, "auto", "hi!", api=api)
            expect(page.locator("#playground-error")).to_be_hidden()
            expect(page.locator("#playground-answer")).to_have_text("Hello from the fake provider!")
            expect(page.locator("#route-api")).to_have_text(path)
            expect(page.locator("#route-tier")).to_have_text("SIMPLE")
            expect(page.locator("#route-model")).not_to_have_text("—")
            expect(page.locator("#route-provider")).not_to_have_text("—")
            billed = float(page.locator("#route-credits").inner_text())
            assert billed > 0, api
            spent += billed
            session.screenshot(f"playground-{api}")
        expect(page.locator("#usage-summary")).to_contain_text("3 requests")
        expect(page.locator("#balance")).to_have_text(re.compile(r"^99\.9"))
        assert session.outside_requests() == []
    assert 0 < spent < 1


def test_the_readme_screenshot(browser: Browser, site: Gateway, supabase: SupabaseStandIn) -> None:
    """The page as the README shows it (copied to docs/dashboard.png by hand when it changes)."""
    with browser_session(browser, width=1200, height=800) as session:
        inject_supabase_session(
            session.context, supabase.url, supabase.session(str(uuid.uuid4()), "grace@example.com")
        )
        page = session.page
        page.goto(site.base_url + "/")
        expect(page.locator("#new-secret-value")).to_have_value(re.compile(r"^cc_live_"))
        first = page.locator("#new-secret-value").input_value()
        page.get_by_role("button", name="I saved it").click()
        for label, message in (
            ("Production", "Prove that there are infinitely many primes."),
            ("Batch", "hi"),
        ):
            page.get_by_label("Label").fill(label)
            page.get_by_role("button", name="Create key").click()
            expect(page.locator("#new-secret-label")).to_have_text(label)
            send_in_playground(page, "auto", message)
            expect(page.locator("#route-tier")).not_to_have_text("—")
            page.get_by_role("button", name="I saved it").click()
        page.get_by_label("API key", exact=True).fill(first)
        send_in_playground(page, "cheap", "What is the capital of France?")
        page.get_by_label("Period").select_option("7")
        expect(page.locator("#usage-summary")).to_contain_text("3 requests")
        expect(page.locator("#chart-keys rect")).to_have_count(3)
        shot = session.screenshot("dashboard")
        shot.replace(shot.with_name("dashboard.png"))
        assert session.outside_requests() == []


def test_a_session_about_to_expire_is_refreshed_by_supabase_js(
    browser: Browser, site: Gateway, supabase: SupabaseStandIn
) -> None:
    """supabase-js renews a token that expires within its margin; the page goes on with the new one."""
    stored = supabase.session(str(uuid.uuid4()), "kim@example.com", lifetime_seconds=30)
    with browser_session(browser) as session:
        inject_supabase_session(session.context, supabase.url, stored)
        session.page.goto(site.base_url + "/")
        expect(session.page.locator("#new-secret-label")).to_have_text("Default")
        refreshes = [url for url in session.requested if "grant_type=refresh_token" in url]
        assert refreshes and all(url.startswith(supabase.url) for url in refreshes)
        assert session.outside_requests() == []


def test_without_supabase_the_page_says_so_and_the_playground_still_works(
    browser: Browser, tmp_path: Path
) -> None:
    settings = make_settings(f"sqlite:///{tmp_path / 'plain.sqlite3'}")
    with running_gateway(settings) as plain, browser_session(browser) as session:
        registered = httpx.post(f"{plain.base_url}/api/agents/register", json={"agentId": "dashboard-test"})
        key = registered.json()["apiKey"]
        page = session.page
        page.goto(plain.base_url + "/")
        expect(page.get_by_role("heading", name="Sign-in is not configured")).to_be_visible()
        expect(page.locator("#status")).to_have_text("Sign-in is not configured on this gateway.")
        expect(page.locator("#sign-in")).to_be_hidden()
        expect(page.locator("#signed-in")).to_be_hidden()
        # Nobody is signed in, so nobody is named and there is nothing to sign out of.
        expect(page.get_by_text("Signed in as")).to_be_hidden()
        expect(page.get_by_role("button", name="Sign out")).to_have_count(0)
        page.get_by_label("API key", exact=True).fill(key)
        for api in ("chat", "responses", "messages"):
            send_in_playground(page, "crosscompute/simulator", "Hello there", api=api)
            expect(page.locator("#playground-answer")).to_contain_text("not a real model")
            expect(page.locator("#route-provider")).to_have_text("simulator")
            expect(page.locator("#route-credits")).to_have_text("0")
        session.screenshot("not-configured")
        assert session.outside_requests() == []
        assert unlabelled_controls(page) == []


def test_signed_out_the_page_offers_the_projects_sign_in_methods(
    browser: Browser, site: Gateway, supabase: SupabaseStandIn
) -> None:
    with browser_session(browser) as session:
        page = session.page
        page.goto(site.base_url + "/")
        expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        expect(page.get_by_text("Signed in as")).to_be_hidden()
        expect(page.get_by_role("button", name="Sign out")).to_have_count(0)
        expect(page.get_by_label("Email address")).to_be_visible()
        expect(page.get_by_role("button", name="Continue with Github")).to_be_visible()
        expect(page.get_by_role("button", name="Continue with Google")).to_have_count(0)
        expect(page.locator("#signed-in")).to_be_hidden()
        page.get_by_label("Email address").fill("lin@example.com")
        page.get_by_role("button", name="Email me a sign-in link").click()
        expect(page.locator("#status")).to_have_text("A sign-in link is on its way to lin@example.com.")
        assert supabase.magic_links[-1] == "lin@example.com"
        session.screenshot("signed-out")
        assert session.outside_requests() == []
    policy = httpx.get(site.base_url + "/").headers["content-security-policy"]
    assert f"connect-src 'self' {supabase.url};" in policy, (
        "this gateway's Supabase is the one outside origin"
    )


def test_envoy_serves_the_files_itself(gateway: Gateway, http: httpx.Client) -> None:
    for item in static_files():
        response = http.get(item.url_path)
        assert response.status_code == 200, item.url_path
        assert response.headers["content-type"] == item.content_type
        assert response.content == item.file.read_bytes()
        assert response.headers["x-content-type-options"] == "nosniff"
    page = http.get("/")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert (
        f"connect-src 'self' {gateway.settings.supabase_url}" not in policy
        or gateway.settings.supabase_configured
    )
    assert http.head("/").status_code == 200 and http.head("/").content == b""
    assert gateway.recorder.take() == [], "static files never reach the gRPC server"
    assert http.post("/").status_code == 404


def contrast(first: str, second: str) -> float:
    """WCAG 2 contrast ratio of two `#rrggbb` colours."""

    def luminance(colour: str) -> float:
        channels = [int(colour[index : index + 2], 16) / 255 for index in (1, 3, 5)]
        linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
        return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]

    light, dark = sorted((luminance(first), luminance(second)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def test_the_colours_meet_wcag_aa() -> None:
    web = static_files()[0].file.parent
    colours = dict(re.findall(r"--([\w-]+):\s*(#[0-9a-f]{6});", (web / "style.css").read_text()))
    text_pairs = [
        ("text", "background"),
        ("text", "card"),
        ("muted", "background"),
        ("muted", "card"),
        ("primary-text", "primary"),
        ("primary", "card"),
        ("text", "warning-bg"),
    ]
    for foreground, background in text_pairs:
        ratio = contrast(colours[foreground], colours[background])
        assert ratio >= 4.5, f"{foreground} on {background}: {ratio:.2f}"
    assert contrast("#ffffff", colours["danger"]) >= 4.5
    for background in ("background", "card", "warning-bg"):  # focus rings (offset onto the page): 3:1
        assert contrast(colours["focus"], colours[background]) >= 3, background
    palette = re.search(r"PALETTE = \[([^\]]+)\]", (web / "charts.js").read_text())
    assert palette is not None
    for colour in re.findall(r"#[0-9a-f]{6}", palette.group(1)):
        assert contrast(colour, colours["card"]) >= 3, colour
