"""The web dashboard at /ui/, driven in a real headless Chromium against a real backend.

The browser is Debian's ``chromium`` (``make test`` installs it; Playwright's own browser
download cannot work here). Screenshots of the main pages are saved to docs/screenshots/
on every run; README.rst links them.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.browser import NARROW, WIDE, Dashboard
from tests.support import Backend, free_port, make_archive, wait_until

# Slow enough to watch (about 200 ms of sim time a second), with a line on stdout.
TICKER = {
    "experiment.json": '{"main_script": "main.py", "timestep": 1.0, '
                       '"description": "Counts steps slowly and says so.", '
                       '"timeout": {"sim_time": 600000}}',
    "main.py": '''import time
print("ticker says hello", flush=True)
try:
    while True:
        sim.run_loop(1)
        time.sleep(0.005)
        if sim.steps % 500 == 0:
            file_logger.info("t = %g ms", sim.time)
except SimulationTimeout:
    file_logger.info("reached the timeout at t=%s ms", sim.time)
''',
}
FAILING = {
    "experiment.json": '{"main_script": "main.py", "description": "Fails after a few steps."}',
    "main.py": '''sim.run_loop(3)
raise RuntimeError("the pump ran dry at step %d" % sim.steps)
''',
}

pytestmark = pytest.mark.slow


# -- the routes, without a browser --------------------------------------------------------

def test_ui_is_served_and_its_errors_are_json(backend: Backend) -> None:
    moved = backend.get("/ui", allow_redirects=False)
    assert moved.status_code == 308 and moved.headers["Location"] == "ui/"  # relative
    assert moved.content == b""
    page = requests.get(backend.url + "/ui/", timeout=10)  # no key: the page is public
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    assert '<script type="module" src="app.js">' in page.text
    script = requests.get(backend.url + "/ui/app.js", timeout=10)
    assert script.status_code == 200 and "javascript" in script.headers["Content-Type"]
    for missing in ("/ui/nothing.js", "/ui/..%2Fapp.py", "/ui/%2e%2e/dashboard.py"):
        answer = backend.get(missing)
        assert answer.status_code == 404, missing
        assert answer.json()["error"]["code"] == "not_found"
    assert "/ui/" in backend.get("/openapi.json").json()["paths"]


def test_simulations_filter_by_owner_and_tell_the_last_event(backend: Backend) -> None:
    backend.upload("ticker", TICKER)
    mine = backend.create("ticker", owner="ada")["id"]
    backend.create("ticker", owner="grace")
    listed = backend.get("/v1/simulations", params={"owner": "ada"}).json()
    assert [r["id"] for r in listed["simulations"]] == [mine]
    assert int(listed["last_event_id"]) >= 2  # two created events at least
    assert backend.get("/v1/simulations", params={"owner": "nobody"}).json()["simulations"] == []


# -- in the browser -------------------------------------------------------------------------

def test_upload_start_pause_resume_stop_and_read_the_log(dashboard: Dashboard,
                                                        tmp_path: Path) -> None:
    from playwright.sync_api import expect

    page, backend = dashboard.page, dashboard.backend
    page.goto(backend.url + "/ui/")
    expect(page.get_by_label("API key")).to_be_focused()
    dashboard.shot("sign-in", full_page=False)
    dashboard.sign_in()
    expect(page.get_by_text("No simulations yet.")).to_be_visible()

    # Upload a folder: the browser packs it into a .tar.gz itself.
    folder = tmp_path / "ticker"
    folder.mkdir()
    for name, text in TICKER.items():
        (folder / name).write_text(text)
    page.get_by_role("link", name="Experiments").click()
    page.locator("#upload-folder").set_input_files(folder)
    expect(page.get_by_label("Name")).to_have_value("ticker")
    page.get_by_role("button", name="Upload").click()
    expect(page.locator("#upload-status")).to_contain_text("Experiment ticker uploaded")
    files = {f["path"] for f in backend.get("/v1/experiments/ticker").json()["files"]}
    assert files == {"experiment.json", "main.py"}
    expect(page.locator('tr[data-experiment="ticker"]')).to_be_visible()
    dashboard.shot("experiments")

    # Start it: the simulation's page follows it live.
    page.get_by_role("button", name="Start ticker").click()
    state = page.locator("#sim-state")
    expect(state).to_have_text("started", timeout=30_000)
    sim_id = page.url.rsplit("/", 1)[1]
    first = dashboard.sim_time()
    expect(page.locator("#fig-sim_time")).not_to_have_text(page.locator(
        "#fig-sim_time").inner_text(), timeout=10_000)
    assert dashboard.sim_time() > first

    page.get_by_role("tab", name="stdout.log").click()
    expect(page.locator("#log-text")).to_contain_text("ticker says hello", timeout=10_000)
    page.get_by_role("tab", name="simulation.log").click()
    expect(page.locator("#log-text")).to_contain_text("t = 500 ms", timeout=20_000)
    dashboard.shot("simulation")

    # Pause: the state says so and the time on screen stands still, status after status.
    page.get_by_role("button", name="Pause").click()
    expect(state).to_have_text("paused")
    backend.wait_server_state(sim_id, "paused")
    # A status computed just before the pause may still be on its way to the page: wait
    # for the paused time there, then watch it stay.
    frozen = int(backend.frozen_sim_time(sim_id))
    wait_until(lambda: dashboard.sim_time() == frozen, 15, "the paused time on the page")
    dashboard.wait_status_ticks(2)
    assert dashboard.sim_time() == frozen
    expect(page.get_by_role("button", name="Resume")).to_be_visible()
    expect(page.get_by_role("button", name="Pause")).to_have_count(0)
    dashboard.shot("simulation-paused", full_page=False)

    page.get_by_role("button", name="Resume").click()
    expect(state).to_have_text("started")
    wait_until(lambda: dashboard.sim_time() > frozen, 15, "the time to go on")

    # The list shows it live too, among runs that ended, and runs created meanwhile.
    backend.upload("pump", FAILING)
    failed = backend.create("pump", state="started")["id"]
    completed = backend.create("brunel", timeout={"sim_time": 100.0}, state="started")["id"]
    backend.wait_state(failed, "failed", timeout=60)
    backend.wait_state(completed, "completed", timeout=60)
    dashboard.open("simulations")
    row = page.locator(f'tr[data-sim-id="{sim_id}"]')
    expect(row.locator(".badge")).to_have_text("started")
    progress = row.locator(".progress-text")
    expect(progress).to_contain_text("/ 600,000 ms", timeout=10_000)
    expect(progress).not_to_have_text(progress.inner_text(), timeout=10_000)
    created = backend.create("hello")["id"]
    expect(page.locator(f'tr[data-sim-id="{created}"] .badge')).to_have_text("created")
    expect(page.locator("tr[data-sim-id]").first).to_have_attribute("data-sim-id", created)
    dashboard.shot("simulations")
    backend.set_state(sim_id, "paused")          # changed elsewhere: the list follows
    expect(row.locator(".badge")).to_have_text("paused")
    backend.set_state(sim_id, "started")
    expect(row.locator(".badge")).to_have_text("started")

    # Stop asks first; cancelling changes nothing.
    row.get_by_role("link", name=sim_id).click()
    expect(state).to_have_text("started")
    page.get_by_role("button", name="Stop").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text(f"Stop simulation {sim_id}?")
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_be_hidden()
    assert backend.record(sim_id)["state"] == "started"
    page.get_by_role("button", name="Stop").click()
    dialog.get_by_role("button", name="Stop simulation").click()
    expect(state).to_have_text("stopped", timeout=20_000)
    expect(page.locator("[data-control]")).to_have_count(0)
    assert backend.wait_state(sim_id, "stopped")["state"] == "stopped"


def test_a_nest_run_shows_its_raster(dashboard: Dashboard) -> None:
    from playwright.sync_api import expect

    page, backend = dashboard.page, dashboard.backend
    sim_id = backend.create("brunel", timeout={"sim_time": 200.0}, state="started")["id"]
    dashboard.sign_in()
    dashboard.open(f"simulations/{sim_id}")
    expect(page.locator("#sim-state")).to_have_text("completed", timeout=120_000)
    raster = page.get_by_role("img", name=f"raster.png of simulation {sim_id}")
    expect(raster).to_be_visible(timeout=30_000)
    assert raster.evaluate("img => img.complete && img.naturalWidth > 100")
    with page.expect_download() as download:
        page.get_by_role("button", name="Download spikes.npz").click()
    assert download.value.suggested_filename == "spikes.npz"
    saved = Path(download.value.path()).read_bytes()
    assert saved == backend.get(f"/v1/simulations/{sim_id}/results/spikes.npz").content
    expect(page.locator("#log-text")).to_contain_text("ex_spikes")
    # The limits it ran with: experiment.json's real time, the backend's start timeout.
    limits = backend.record(sim_id)["effective_limits"]
    assert limits == {"real_time": 600, "memory_mb": None, "start_timeout": 120}, limits
    expect(page.locator(".facts")).to_contain_text(
        "real time 10 min 00 s · memory none · start 2 min 00 s")
    dashboard.shot("simulation-nest")


def test_a_finished_runs_page_reads_it_once(dashboard: Dashboard) -> None:
    """A run that is over: the page follows its events from where they stood before it
    read the record, and is answered 204 (nothing more will come): it neither replays
    the run's history nor lists its results a second time."""
    from playwright.sync_api import expect

    page, backend = dashboard.page, dashboard.backend
    sim_id = backend.create("hello", timeout={"sim_time": 200.0}, state="started")["id"]
    backend.wait_state(sim_id, "completed")
    backend.wait_uploaded(sim_id)
    answers: list[tuple[str, int]] = []  # (handlers run while Playwright is called)
    page.on("response", lambda response: answers.append((response.url, response.status))
            if f"/v1/simulations/{sim_id}/" in response.url else None)
    dashboard.sign_in()
    with page.expect_response(lambda r: f"/v1/simulations/{sim_id}/events" in r.url,
                              timeout=30_000) as events:
        dashboard.open(f"simulations/{sim_id}")
    assert events.value.status == 204
    expect(page.locator("#sim-state")).to_have_text("completed")
    expect(page.get_by_role("row", name="trace.npz")).to_be_visible()
    expect(page.locator("#log-text")).to_contain_text("reached the timeout")
    assert sum("/results?" in u for u, _ in answers) == 1, answers


def test_a_failed_run_shows_its_error(dashboard: Dashboard) -> None:
    from playwright.sync_api import expect

    page = dashboard.page
    dashboard.sign_in()
    page.get_by_role("link", name="Experiments").click()
    page.locator("#upload-archive").set_input_files(files=[{
        "name": "pump.tar.gz", "mimeType": "application/gzip",
        "buffer": make_archive(FAILING)}])
    expect(page.get_by_label("Name")).to_have_value("pump")
    page.get_by_role("button", name="Upload").click()
    page.get_by_role("button", name="Start pump").click()
    expect(page.locator("#sim-state")).to_have_text("failed", timeout=30_000)
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("This run failed")
    expect(alert).to_contain_text("script_error")
    expect(page.locator("#error-message")).to_contain_text("the pump ran dry at step 3")
    dashboard.shot("simulation-failed")


def test_readable_on_a_narrow_screen(browser: Any, seeded: Backend) -> None:
    from playwright.sync_api import expect

    sim_id = seeded.create("hello", state="started")["id"]
    tab = Dashboard(browser, seeded, NARROW)
    try:
        tab.sign_in()
        row = tab.page.locator(f'tr[data-sim-id="{sim_id}"]')
        expect(row.locator(".badge")).to_have_text("started", timeout=30_000)
        expect(row.locator(".progress-text")).to_contain_text("/ 20,000 ms", timeout=10_000)
        tab.shot("narrow-simulations")
        assert tab.page.evaluate("document.documentElement.scrollWidth") <= NARROW["width"]
        tab.open("experiments")
        expect(tab.page.get_by_role("button", name="Start hello")).to_be_visible()
        assert tab.page.evaluate("document.documentElement.scrollWidth") <= NARROW["width"]
        tab.shot("narrow-experiments")
        tab.open(f"simulations/{sim_id}")
        expect(tab.page.get_by_role("button", name="Pause")).to_be_visible()
        tab.wait_status_ticks(1)
        # Live figures change, the layout does not.
        watched = [".logs", "[data-control=pause]", "#fig-steps", ".progress-text"]
        before = [tab.page.locator(css).bounding_box() for css in watched]
        steps = tab.page.locator("#fig-steps").inner_text()
        tab.wait_status_ticks(2)
        assert tab.page.locator("#fig-steps").inner_text() != steps
        assert [tab.page.locator(css).bounding_box() for css in watched] == before
        tab.shot("narrow-simulation")
        # Nothing wider than the screen: no sideways scrolling.
        assert tab.page.evaluate("document.documentElement.scrollWidth") <= NARROW["width"]
    finally:
        tab.close()


def test_audit_page_shows_who_changed_what(dashboard: Dashboard) -> None:
    from playwright.sync_api import expect

    sim_id = dashboard.backend.create("hello")["id"]
    assert dashboard.backend.set_state(sim_id, "stopped").status_code == 200
    dashboard.sign_in()
    dashboard.page.get_by_role("link", name="Audit").click()
    rows = dashboard.page.locator("table.audit tbody tr")
    expect(rows.first).to_contain_text(f"PUT /v1/simulations/{sim_id}/state")
    expect(rows.first).to_contain_text("admin")
    expect(rows.nth(1)).to_contain_text("POST /v1/simulations")


def _assert_watch_only(tab: Dashboard, sim_id: str) -> None:
    """An observer's dashboard: no audit, no controls on running ``sim_id``, no upload or
    start (the experiment ``hello`` is listed all the same)."""
    from playwright.sync_api import expect

    expect(tab.page.locator(".user-role")).to_have_text("observer")
    expect(tab.page.get_by_role("link", name="Audit")).to_be_hidden()
    tab.open(f"simulations/{sim_id}")
    expect(tab.page.locator("#sim-state")).to_have_text("started", timeout=30_000)
    expect(tab.page.get_by_text("You may watch this simulation")).to_be_visible()
    expect(tab.page.locator("[data-control]")).to_have_count(0)
    tab.open("experiments")
    expect(tab.page.locator('tr[data-experiment="hello"]')).to_be_visible()
    expect(tab.page.get_by_role("button", name="Start hello")).to_have_count(0)
    expect(tab.page.get_by_role("heading", name="Upload an experiment")).to_have_count(0)


def test_an_observer_sees_no_control_buttons(browser: Any, seeded: Backend) -> None:

    if not hasattr(Backend, "create_key"):
        pytest.skip("needs authentication: tests.support.Backend has no create_key yet")
    key = seeded.create_key("obs", "observer")
    sim_id = seeded.create("hello", state="started")["id"]
    tab = Dashboard(browser, seeded, WIDE)
    try:
        tab.sign_in(key)
        _assert_watch_only(tab, sim_id)
    finally:
        tab.close()


def _as(tab: Dashboard, name: str, role: str) -> None:
    """Make /v1/whoami name ``role`` in this tab: the dashboard's side of the role rules,
    tested before the backend has keys and roles (the test above drives the real ones).
    The key sent stays the test client's, which the backend accepts."""
    tab.context.route("**/v1/whoami", lambda route: route.fulfill(
        json={"name": name, "role": role, "kind": "key"}))


def test_buttons_follow_the_role(browser: Any, seeded: Backend) -> None:
    from playwright.sync_api import expect

    own = seeded.create("hello", owner="ada", state="started")["id"]
    other = seeded.create("hello", owner="bob", state="started")["id"]
    tab = Dashboard(browser, seeded, WIDE)
    sent: list[str | None] = []
    tab.page.on("request", lambda request: sent.append(request.headers.get("authorization"))
                if "/v1/" in request.url else None)
    try:
        _as(tab, "ada", "scientist")
        tab.sign_in()
        expect(tab.page.locator(".user-role")).to_have_text("scientist")
        expect(tab.page.get_by_role("link", name="Audit")).to_be_hidden()
        tab.page.get_by_role("button", name="Mine").click()
        expect(tab.page.get_by_label("Owner")).to_have_value("ada")
        expect(tab.page.locator("tr[data-sim-id]")).to_have_count(1)
        expect(tab.page.locator(f'tr[data-sim-id="{own}"]')).to_be_visible()

        tab.open(f"simulations/{own}")
        expect(tab.page.get_by_role("button", name="Pause")).to_be_visible(timeout=30_000)
        tab.open(f"simulations/{other}")
        expect(tab.page.get_by_text("You may watch this simulation")).to_be_visible()
        expect(tab.page.locator("[data-control]")).to_have_count(0)
        tab.open("experiments")
        expect(tab.page.get_by_role("button", name="Start hello")).to_be_visible()
        assert sent and set(sent) == {f"Bearer {tab.key}"}, set(sent)
    finally:
        tab.close()

    tab = Dashboard(browser, seeded, WIDE)
    try:
        _as(tab, "olga", "observer")
        tab.sign_in()
        _assert_watch_only(tab, own)
    finally:
        tab.close()


def test_a_refused_key_leads_back_to_sign_in(browser: Any, seeded: Backend) -> None:
    from playwright.sync_api import expect

    refused = {"status": 401, "json": {"error": {"code": "unauthorized",
                                                 "message": "unknown API key"}}}
    tab = Dashboard(browser, seeded, WIDE)
    try:
        tab.context.route("**/v1/whoami", lambda route: route.fulfill(**refused))
        tab.page.goto(seeded.url + "/ui/")
        tab.page.get_by_label("API key").fill("wrong")
        tab.page.get_by_role("button", name="Sign in").click()
        expect(tab.page.get_by_role("alert")).to_contain_text("This API key was not accepted")
        assert tab.page.evaluate("sessionStorage.length") == 0

        tab.context.unroute("**/v1/whoami")
        tab.sign_in()
        expect(tab.page.get_by_text("No simulations yet.")).to_be_visible()  # all loaded
        # The key is revoked while the tab is open.
        tab.context.route("**/v1/experiments*", lambda route: route.fulfill(**refused))
        tab.page.get_by_role("link", name="Experiments").click()
        expect(tab.page.get_by_role("heading", name="Sign in")).to_be_visible()
        expect(tab.page.get_by_role("alert")).to_contain_text("no longer accepted")
        assert tab.page.evaluate("sessionStorage.length") == 0
        # Signed in again, the page it was on comes back.
        tab.context.unroute("**/v1/experiments*")
        tab.page.get_by_label("API key").fill(tab.key)
        tab.page.get_by_role("button", name="Sign in").click()
        expect(tab.page.get_by_role("heading", name="Experiments")).to_be_visible()
    finally:
        tab.close()


def test_the_audit_trail_for_operators(browser: Any, seeded: Backend) -> None:
    """The audit page shows what GET /v1/audit answers, filters through the query string."""
    from playwright.sync_api import expect

    entries = [
        {"id": 2, "time": "2026-12-04T10:02:11.120Z", "identity": "ada", "role": "scientist",
         "method": "PUT", "path": "/v1/simulations/run1/state", "target": "run1",
         "status": 200, "client": "127.0.0.1"},
        {"id": 1, "time": "2026-12-04T10:01:07.981Z", "identity": "bob", "role": "observer",
         "method": "POST", "path": "/v1/simulations", "target": None, "status": 403,
         "client": "127.0.0.1"}]
    asked: list[str] = []

    def audit(route: Any) -> None:
        asked.append(route.request.url)
        identity = re.search(r"identity=(\w+)", route.request.url)
        route.fulfill(json={"audit": [e for e in entries
                                      if not identity or e["identity"] == identity[1]]})

    tab = Dashboard(browser, seeded, WIDE)
    try:
        _as(tab, "olaf", "operator")
        tab.context.route("**/v1/audit*", audit)
        tab.sign_in()
        tab.page.get_by_role("link", name="Audit").click()
        rows = tab.page.locator("table.audit tbody tr")
        expect(rows).to_have_count(2)
        expect(rows.first).to_contain_text("PUT /v1/simulations/run1/state")
        expect(rows.nth(1)).to_contain_text("403")
        tab.shot("audit")
        tab.page.get_by_label("Identity").fill("ada")
        tab.page.get_by_label("Identity").press("Enter")
        expect(rows).to_have_count(1)
        assert "identity=ada" in asked[-1]
    finally:
        tab.close()


def test_the_controls_are_reachable_by_keyboard(dashboard: Dashboard) -> None:
    from playwright.sync_api import expect

    page, backend = dashboard.page, dashboard.backend
    sim_id = backend.create("hello", state="started")["id"]
    dashboard.sign_in()
    dashboard.open(f"simulations/{sim_id}")
    expect(page.locator("#sim-state")).to_have_text("started", timeout=30_000)
    for _ in range(30):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.dataset.control") == "pause":
            break
    else:
        raise AssertionError("Tab never reached the Pause button")
    page.keyboard.press("Enter")
    expect(page.locator("#sim-state")).to_have_text("paused")
    backend.wait_state(sim_id, "paused")
    # Pause became Resume in its place, and the focus went with it: Enter resumes.
    wait_until(lambda: focused_control(page) == "resume", 15, "Resume to have the focus")
    page.keyboard.press("Enter")
    expect(page.locator("#sim-state")).to_have_text("started")
    backend.wait_state(sim_id, "started")
    wait_until(lambda: focused_control(page) == "pause", 15, "Pause to have the focus")


def focused_control(page: Any) -> str | None:
    return page.evaluate("document.activeElement.dataset.control || null")


def test_live_updates_go_on_after_the_backend_restarts(browser: Any, tmp_path: Path) -> None:
    """kill -9 the backend under an open page: the page says so, reconnects with its
    Last-Event-ID when the backend is back, and shows every log line once."""
    from playwright.sync_api import expect

    backend = Backend(tmp_path / "data", args=("--port", str(free_port()))).start()
    tab = None
    try:
        backend.upload("ticker", TICKER)
        sim_id = backend.create("ticker", state="started")["id"]
        tab = Dashboard(browser, backend, WIDE)
        tab.sign_in()
        tab.open(f"simulations/{sim_id}")
        log = tab.page.locator("#log-text")
        expect(log).to_contain_text("t = 500 ms", timeout=30_000)

        backend.kill9()
        expect(tab.page.locator("#connection")).to_contain_text("reconnecting")
        backend.http = requests.Session()
        backend.start()  # the same port: the page's address still holds
        expect(tab.page.locator("#connection")).to_be_empty()
        expect(log).to_contain_text("t = 1500 ms", timeout=30_000)
        text = log.inner_text()
        for line in ("t = 500 ms", "t = 1000 ms", "t = 1500 ms", "running main.py"):
            assert text.count(line) == 1, (line, text)
        tab.page.get_by_role("button", name="Pause").click()
        expect(tab.page.locator("#sim-state")).to_have_text("paused")
    finally:
        if tab is not None:
            tab.close()
        backend.cleanup()
