#!/usr/bin/env python3
"""The web console in a real browser (issue 18): headless Chromium from Debian through chromium-driver
(WebDriver, selenium), against a real `lockstep serve` started by ConsoleBrowserTests with a migration
`m1` of plan `console` (expand -> backfill -> switch (gated, ledger-team) -> contract). This script is
also the migration's agent (polls and completes steps over the JSON API, with the agent's token).

Usage: console_browser.py URL GRPC LOCKSTEP_BINARY SCREENSHOT_DIR   (tokens in the environment:
ALICE operator, BOB approver, CAROL auditor, AGENT agent). Prints one line per check; exits 1 on the
first failure."""

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

URL, GRPC, LOCKSTEP, SHOTS = sys.argv[1:5]
ALICE, BOB, CAROL, AGENT = (os.environ[name] for name in ("ALICE", "BOB", "CAROL", "AGENT"))
MARKUP = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script> looks <b>good</b>'


def check(condition, what):
    if not condition:
        print(f"FAILED: {what}", flush=True)
        sys.exit(1)
    print(f"ok: {what}", flush=True)


def call(path, body, token):
    request = urllib.request.Request(URL + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"content-type": "application/json", "authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def lease(service):
    status, answer = call("/v1/agent/poll", {"service": service, "agent_id": "browser-test-agent", "wait_ms": 5000}, AGENT)
    check(status == 200 and "step" in answer, f"the agent leases a step of {service}")
    return answer["step"]


def complete(step):
    status, answer = call("/v1/agent/complete", {"lease_id": step["lease_id"], "fencing_token": step["fencing_token"]}, AGENT)
    check(status == 200, f"the agent completes {step['lease_id']}: {answer}")


options = webdriver.ChromeOptions()
options.binary_location = "/usr/bin/chromium"
for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900"):
    options.add_argument(argument)
options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
driver.set_page_load_timeout(30)
wait = WebDriverWait(driver, 30)  # the whole suite runs beside it on 2 cores


def until(condition, what):
    def holds(_):
        try:
            return condition()
        except StaleElementReferenceException:
            return False
    try:
        wait.until(holds)
    except TimeoutException:
        # What the page showed instead, for the failure's report.
        print("page:", driver.current_url, stable(lambda: driver.find_element(By.TAG_NAME, "main").text)[:2000], flush=True)
        check(False, what)
    check(True, what)


def stable(action):
    """Runs `action` again when the page redrew under it (a live view redraws as events arrive)."""
    for _ in range(20):
        try:
            return action()
        except StaleElementReferenceException:
            time.sleep(0.1)
    return action()


def console_errors():
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def shot(name):
    driver.save_screenshot(os.path.join(SHOTS, f"console-{name}.png"))


def visit(fragment, ready_selector, name):
    """Loads a view, waits for it, checks the browser logged no error (CSP violations included), screenshots it."""
    driver.get(f"{URL}/ui#{fragment}")
    until(lambda: driver.find_elements(By.CSS_SELECTOR, ready_selector), f"the {name} view loads ({fragment})")
    time.sleep(0.3)
    errors = console_errors()
    check(not errors, f"the {name} view logs no console error: {errors}")
    text = stable(lambda: driver.find_element(By.TAG_NAME, "main").text)
    check("[object " not in text and "undefined" not in text and "NaN" not in text, f"the {name} view shows no placeholder of a missing value")
    shot(name)


def sign_in_with_form(token):
    driver.get(f"{URL}/ui")
    until(lambda: driver.find_elements(By.ID, "token") or driver.find_elements(By.XPATH, "//button[text()='Sign out']"), "the sign-in form or a session shows")
    for button in driver.find_elements(By.XPATH, "//button[text()='Sign out']"):
        button.click()
        until(lambda: driver.find_elements(By.ID, "token"), "signing out shows the sign-in form")
    field = driver.find_element(By.ID, "token")
    field.send_keys(token)
    field.submit()
    until(lambda: driver.find_elements(By.XPATH, "//button[text()='Sign out']"), "signed in with the form")


def node_status(node):
    # Read in the page in one step: the graph is redrawn as events arrive, so an element found first may be gone.
    return driver.execute_script("const n = document.querySelector(`g.node[data-node='${arguments[0]}']`); return n ? n.getAttribute('data-status') : null;", node)


def console_link(token):
    """A one-time sign-in link, made by `lockstep console link` (the token never goes into an address)."""
    made = subprocess.run([LOCKSTEP, "console", "link", "--server", GRPC, "--token", token], capture_output=True, text=True, timeout=60)
    check(made.returncode == 0 and "/ui#code=" in made.stdout, f"lockstep console link makes a link: {made.stdout} {made.stderr}")
    return made.stdout.strip()


try:
    # 1. A link with a bearer token in it is not used (the token leaves the address at once); the operator
    # signs in with a one-time link instead, once she says so; the same link used again signs nobody in.
    driver.get(f"{URL}/ui#token={ALICE}")
    until(lambda: "not accepted" in driver.find_element(By.TAG_NAME, "main").text, "a link carrying a token is refused")
    check(ALICE not in driver.current_url and "alice" not in driver.find_element(By.ID, "who").text, "its token has left the address, and nobody is signed in")
    link = console_link(ALICE)
    driver.get(link)
    until(lambda: "Sign in with this link?" in driver.find_element(By.TAG_NAME, "main").text, "a link asks before it signs a browser in")
    check("code=" not in driver.current_url and "alice" not in driver.find_element(By.ID, "who").text, "its code has left the address, and nobody is signed in yet")
    driver.find_element(By.XPATH, "//button[text()='Sign in with the link']").click()
    until(lambda: "alice" in driver.find_element(By.ID, "who").text, "alice is signed in by her link")
    again = urllib.request.Request(f"{URL}/ui/session", data=json.dumps({"code": link.split("#code=")[1]}).encode(),
                                   headers={"content-type": "application/json"})
    try:
        urllib.request.urlopen(again, timeout=30)
        spent = "signed in again"
    except urllib.error.HTTPError as refused:
        spent = (refused.code, json.loads(refused.read())["code"])
    check(spent == (401, "unauthenticated"), f"the link's code signs in once only: {spent}")
    cookies = driver.get_cookies()
    session = [c for c in cookies if c["name"] == "lockstep_session"]
    check(session and session[0]["httpOnly"] and session[0].get("sameSite") == "Strict", f"the session cookie is HttpOnly and SameSite=Strict: {session}")
    check(driver.execute_script("return document.cookie").find("lockstep_session") < 0, "scripts cannot read the session cookie")
    visit("/migrations", "table tbody tr", "migrations")
    check("m1" in driver.find_element(By.TAG_NAME, "tbody").text, "the list shows m1")
    # The filter is in the address, so the view can be shared.
    driver.get(f"{URL}/ui#/migrations?q=nothing-like-this")
    until(lambda: driver.find_element(By.ID, "filter-q").get_attribute("value") == "nothing-like-this", "a filter in the address fills the form")
    check("0 of 2" in driver.find_element(By.TAG_NAME, "main").text, "and filters the list")

    # 2. Live graph: expand runs, then succeeds, without the page reloading.
    step = lease("orders")
    visit("/migration/m1", "g.node", "graph")
    until(lambda: node_status("expand") == "running", "the graph shows expand running")
    driver.execute_script("window.__sameDocument = true")
    complete(step)
    until(lambda: node_status("expand") == "succeeded", "the graph shows expand succeeded, live")
    check(driver.execute_script("return window.__sameDocument === true"), "without a reload")
    complete(lease("ledger"))
    until(lambda: node_status("switch") == "awaiting approval", "switch waits for its approval, live")
    # By keyboard: the node takes focus and Enter opens its details.
    driver.execute_script("document.querySelector(`g.node[data-node='switch']`).focus()")
    driver.switch_to.active_element.send_keys(Keys.ENTER)
    until(lambda: driver.find_elements(By.CSS_SELECTOR, 'aside.panel'), "a node's details open")
    panel = stable(lambda: driver.find_element(By.CSS_SELECTOR, 'aside.panel').text)
    check("awaiting approval" in panel and "[object " not in panel,
          "they show the node's status as words")
    check(not driver.find_elements(By.XPATH, "//button[text()='Approve…']"), "the operator sees no approve button (not an approver)")
    check(driver.find_elements(By.XPATH, "//button[text()='Pause…']"), "the operator sees pause")
    shot("node")

    # 3. The approver signs in with the form and approves with a comment full of markup.
    sign_in_with_form(BOB)
    # A sign-in link opened while signed in asks before it swaps the session.
    driver.get(f"{URL}/ui#token={CAROL}")
    until(lambda: "Link not used" in driver.find_element(By.TAG_NAME, "main").text, "a link carrying a token, opened while signed in, says it was not used")
    check(CAROL not in driver.current_url, "and its token has left the address")
    driver.find_element(By.XPATH, "//button[text()='Continue']").click()
    until(lambda: "bob" in driver.find_element(By.ID, "who").text and driver.find_elements(By.CSS_SELECTOR, "table"), "bob is still signed in")
    driver.get(console_link(CAROL))
    until(lambda: "Switch accounts?" in driver.find_element(By.TAG_NAME, "main").text, "a link opened while signed in asks first")
    check("code=" not in driver.current_url, "and its code has left the address")
    driver.find_element(By.XPATH, "//button[text()='Stay bob']").click()
    until(lambda: "bob" in driver.find_element(By.ID, "who").text and driver.find_elements(By.CSS_SELECTOR, "table"), "staying keeps bob signed in")
    visit("/migration/m1?node=switch", "aside.panel", "approver")
    stable(lambda: driver.find_element(By.XPATH, "//button[text()='Approve…']").click())
    until(lambda: driver.find_element(By.ID, "confirm").is_displayed(), "approving asks for confirmation first")
    check("recorded with your name" in driver.find_element(By.ID, "confirm-what").text, "the confirmation says what will happen")
    driver.find_element(By.ID, "confirm-reason").send_keys(MARKUP)
    driver.find_element(By.ID, "confirm-ok").click()
    until(lambda: not driver.find_element(By.ID, "confirm").is_displayed(), "the approval is sent")
    status, migration = call("/v1/migrations/get", {"migration_id": "m1"}, ALICE)
    switch = [n for n in migration["nodes"] if n["node_id"] == "switch"][0]
    check(switch.get("approved_by") == ["bob"], f"the approval is recorded for bob: {switch.get('approved_by')}")
    visit("/migration/m1?tab=timeline&density=full&kind=approval_granted", "#timeline tbody tr", "timeline")
    row_text = stable(lambda: driver.find_element(By.CSS_SELECTOR, '#timeline tbody tr[data-kind="approval_granted"]').text)
    check("user:bob" in row_text, f"the approval's actor is user:bob: {row_text}")
    check(MARKUP in row_text, "the comment's markup arrives as text")
    check(driver.execute_script("return window.__pwned === undefined"), "and none of it ran")
    check(not driver.find_elements(By.CSS_SELECTOR, "main img, main b, main script"), "and none of it became elements")
    stable(lambda: driver.find_element(By.CSS_SELECTOR, '#timeline tbody tr[data-kind="approval_granted"] button').click())
    until(lambda: '"approval_granted"' in stable(lambda: driver.find_element(By.ID, "timeline").text), "the raw event is a click away")
    # Live events redraw the timeline without closing the raw event being read.
    def recorded():
        text = stable(lambda: driver.find_element(By.TAG_NAME, "main").text)
        return int(text.split(" events.")[0].rsplit(" of ", 1)[1]) if " events." in text else 0
    before = recorded()
    for verb, body in (("pause", {"migration_id": "m1", "reason": "the timeline's live redraw"}), ("resume", {"migration_id": "m1"})):
        status, answer = call(f"/v1/migrations/{verb}", body, ALICE)
        check(status == 200, f"the operator's {verb} is recorded: {answer}")
    until(lambda: recorded() >= before + 2, "the pause and the resume reach the timeline live")
    check('"approval_granted"' in stable(lambda: driver.find_element(By.ID, "timeline").text), "the raw event opened stays open through the redraw")
    driver.get(f"{URL}/ui#/migration/m1?tab=timeline&density=compact")
    until(lambda: driver.find_elements(By.CSS_SELECTOR, "#timeline tbody tr"), "the compact timeline loads")
    shot("timeline-compact")

    # 4. The run goes on (switch runs; contract is left ready); the other views load without an error.
    complete(lease("ledger"))
    visit("/migration/m1?tab=evidence", "section.panel", "evidence")
    visit("/migration/m1?tab=changes&from=1", "#moved", "changes")
    check("switch" in stable(lambda: driver.find_element(By.ID, "moved").text), "between two instants, switch moved")
    visit("/leases", "#held", "leases")
    visit("/plans", "table", "plans")
    visit("/plans?name=console&a=1&b=2", "#plan-diff", "plan-diff")
    diff = driver.find_element(By.ID, "plan-diff").text
    check("changed" in diff and "contract" in diff and "drop-column-later" in diff and "expand" not in diff,
          f"the plans view shows what changed between v1 and v2, and only that: {diff}")
    visit("/integrity", "#head-sequence", "integrity")
    driver.find_element(By.XPATH, "//button[text()='Verify the whole history now']").click()
    until(lambda: "the chain verifies" in driver.find_element(By.ID, "verify-result").text, "verifying again from the console passes")
    shot("integrity")

    # 5. As of a middle instant: the graph is what `lockstep history replay --at` says.
    status, page = call("/v1/history/events", {"after_sequence": "0", "stream": "migration/m1", "page_size": 1000}, ALICE)
    sequences = [int(e["sequence"]) for e in page["events"]]
    middle = sequences[len(sequences) // 2]
    replay = subprocess.run([LOCKSTEP, "history", "replay", "--server", GRPC, "--token", ALICE, "--at", str(middle), "--output", "json"],
                            capture_output=True, text=True, timeout=60)
    check(replay.returncode == 0, f"lockstep history replay --at {middle}: {replay.stderr}")
    replayed = [m for m in json.loads(replay.stdout)["migrations"] if m["migration_id"] == "m1"][0]
    visit(f"/migration/m1?at={middle}", ".banner", "as-of")
    check(f"As of event {middle}" in driver.find_element(By.CSS_SELECTOR, ".banner").text, "the banner names the instant")
    words = {"NODE_STATUS_PENDING": "pending", "NODE_STATUS_READY": "ready", "NODE_STATUS_WAITING_FOR_SERVICES": "waiting for services",
             "NODE_STATUS_AWAITING_APPROVAL": "awaiting approval", "NODE_STATUS_RUNNING": "running", "NODE_STATUS_SUCCEEDED": "succeeded"}
    for node in replayed["nodes"]:
        check(node_status(node["node_id"]) == words.get(node["status"], node["status"]),
              f"as of {middle}, {node['node_id']} is {node['status']} in the console and in the replay")
    check(not driver.find_elements(By.XPATH, "//button[text()='Pause…']"), "no actions on a past instant")

    # 6. The auditor sees no write control, and a write forged from the page is refused by the server.
    sign_in_with_form(CAROL)
    visit("/migration/m1", "g.node", "auditor")
    check(not driver.find_elements(By.XPATH, "//button[contains(text(), '…')]"), "the auditor sees no action")
    visit("/leases", "#held", "auditor-leases")
    check(not driver.find_elements(By.XPATH, "//button[text()='Force release…']"), "nor a force release")
    forged = driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        (async () => {
          const me = await (await fetch('/ui/session')).json();
          const send = headers => fetch('/v1/migrations/pause', {method: 'POST', headers: Object.assign({'content-type': 'application/json'}, headers),
                                                                 body: JSON.stringify({migration_id: 'm1', reason: 'forged'})})
                                  .then(async r => [r.status, (await r.json()).code]);
          done([await send({'x-lockstep-csrf': me.csrf_token}), await send({})]);
        })();""")
    check(forged[0] == [403, "permission_denied"], f"a forged pause with the auditor's session is refused: {forged[0]}")
    check(forged[1] == [403, "csrf_rejected"], f"one without the CSRF token is refused before anything: {forged[1]}")
    driver.get_log("browser")  # the two refusals just made are logged as failed loads; nothing else may be

    # 7. Evidence: the canary m2 bakes, two samples arrive, its analysis passes; the view charts them.
    complete(lease("checkout"))
    for value in (0.002, 0.004):
        status, answer = call("/v1/metrics/record", {"migration_id": "m2", "node_id": "route", "name": "error_rate", "value": value, "source": "console-test"}, AGENT)
        check(status == 200, f"a sample of {value} is recorded during the bake: {answer}")
    deadline = time.time() + 60
    while call("/v1/migrations/get", {"migration_id": "m2"}, ALICE)[1].get("status") != "MIGRATION_STATUS_SUCCEEDED":
        check(time.time() < deadline, "the canary's analysis passes and it succeeds")
        time.sleep(0.2)
    visit("/migration/m2?tab=evidence", "svg.chart", "evidence-analysis")
    evidence = driver.find_element(By.TAG_NAME, "main").text
    check("error_rate: pass" in evidence and "2 samples" in evidence, f"the analysis's evidence is shown: {evidence[:600]}")
    check(len(driver.find_elements(By.CSS_SELECTOR, "svg.chart circle")) == 2, "its two samples are charted")
    check("pass" in driver.find_element(By.CSS_SELECTOR, "svg.chart").text, "against the pass threshold")

    # 8. Readable at 390 px: the page does not scroll sideways (wide tables scroll in their own box).
    driver.set_window_size(390, 844)
    visit("/migration/m1?tab=timeline&density=full", "#timeline tbody tr", "narrow")
    width = driver.execute_script("return document.documentElement.scrollWidth")
    check(width <= 400, f"at 390 px the page is {width} px wide")
    check(not console_errors(), "no console error at the end")
finally:
    driver.quit()
print("console: all checks passed", flush=True)
