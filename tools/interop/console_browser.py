"""Drives the hub's operator console in a real browser for tests/it/console.rs: Debian's
Chromium, headless, through chromium-driver and Selenium.

    console_browser.py --hub URL --link LOGIN_LINK --approve ID --deny ID --shots DIR

1. Without a session, /console sends the browser to the sign-in page.
2. The one-time link signs in (a click on "Sign in": opening the link alone signs nobody in).
3. A page on another origin (served here on 127.0.0.1) posts a form to the console to approve
   the approval meant to be denied: the hub must refuse it.
4. The approval --approve is approved with its button, --deny denied with a reason.
5. Every page is photographed (and the approvals page at a phone's width) into --shots.

Prints one JSON object with what it saw; exits 1 if a step could not be done.
"""

import argparse
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait


def browser() -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,900",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def foreign_site(target: str) -> ThreadingHTTPServer:
    """Another origin whose page posts a form to `target` as soon as it loads."""
    page = f"""<!doctype html><title>win a prize</title>
<form id="f" method="post" action="{target}"><input name="csrf" value="guessed"></form>
<script>document.getElementById('f').submit()</script>"""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            body = page.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hub", required=True)
    parser.add_argument("--link", required=True)
    parser.add_argument("--approve", required=True)
    parser.add_argument("--deny", required=True)
    parser.add_argument("--agent", required=True)
    parser.add_argument("--shots", required=True)
    args = parser.parse_args()
    hub = args.hub.rstrip("/")
    report = {}
    driver = browser()
    wait = WebDriverWait(driver, 20)

    def shot(name):
        driver.save_screenshot(f"{args.shots}/{name}.png")

    try:
        driver.get(f"{hub}/console")
        report["unsigned_lands_on"] = driver.current_url.replace(hub, "")
        shot("login")

        driver.get(args.link)
        driver.find_element(By.CSS_SELECTOR, "form[action='/console/login'] button").click()
        wait.until(EC.url_contains("/console/approvals"))
        cards = [c.get_attribute("id") for c in driver.find_elements(By.CSS_SELECTOR, "section.card")]
        report["pending_shown"] = cards
        card = driver.find_element(By.ID, f"approval-{args.approve}")
        report["arguments_shown"] = json.loads(card.find_element(By.CSS_SELECTOR, "pre.arguments").text)
        shot("approvals")
        # At a phone's width, nothing runs off the side.
        driver.set_window_size(390, 844)
        driver.get(f"{hub}/console/approvals")
        shot("approvals-phone")
        report["phone_overflows"] = driver.execute_script(
            "return document.documentElement.scrollWidth > window.innerWidth"
        )
        driver.set_window_size(1280, 900)

        # A cross-site form post, from a page on another origin, with the session cookie's
        # owner signed in.
        foreign = foreign_site(f"{hub}/console/approvals/{args.deny}/approve")
        driver.get(f"http://127.0.0.1:{foreign.server_address[1]}/")
        time.sleep(1.0)
        report["cross_site_answer"] = driver.find_element(By.TAG_NAME, "body").text
        foreign.shutdown()

        driver.get(f"{hub}/console/approvals")
        card = driver.find_element(By.ID, f"approval-{args.approve}")
        card.find_element(By.CSS_SELECTOR, "button.approve").click()
        wait.until(EC.staleness_of(card))
        card = wait.until(EC.presence_of_element_located((By.ID, f"approval-{args.deny}")))
        card.find_element(By.CSS_SELECTOR, "input[name=reason]").send_keys("not this customer")
        card.find_element(By.CSS_SELECTOR, "button.deny").click()
        wait.until(EC.staleness_of(card))
        wait.until(EC.presence_of_element_located((By.TAG_NAME, "main")))
        report["pending_after"] = [
            c.get_attribute("id") for c in driver.find_elements(By.CSS_SELECTOR, "section.card")
        ]

        for page in ("agents", "revocations"):
            driver.get(f"{hub}/console/{page}")
            shot(page)
        driver.get(f"{hub}/console/audit?agent={args.agent}&verify=1")
        report["audit_text"] = driver.find_element(By.TAG_NAME, "main").text
        shot("audit")
        driver.set_window_size(390, 844)
        driver.get(f"{hub}/console/agents")
        shot("agents-phone")
    except Exception as error:  # noqa: BLE001 - report any failure with what was seen
        report["error"] = f"{type(error).__name__}: {error}"
        report["url"] = driver.current_url
        try:
            report["page"] = driver.find_element(By.TAG_NAME, "body").text[:500]
        except Exception:  # noqa: BLE001
            pass
        print(json.dumps(report))
        return 1
    finally:
        driver.quit()
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
