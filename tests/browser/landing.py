"""Drives the demo landing page in headless Chromium (Debian's chromium + chromium-driver).

Usage: landing.py URL SCREENSHOT.png

Clicks every scenario button and waits for a trace id to appear, sends a burst of 20, makes a
chosen service fail through the page's selector, checks the Grafana links, and saves a
screenshot. Exits non-zero with a message on any failure.
"""

import json
import re
import sys
import tempfile
import urllib.parse

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

TRACE_ID = re.compile(r"\b[0-9a-f]{32}\b")


def browser():
    options = Options()
    options.binary_location = "/usr/bin/chromium"
    for flag in [
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", "--window-size=1280,1400",
        f"--user-data-dir={tempfile.mkdtemp(prefix='chromium-')}",
    ]:
        options.add_argument(flag)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def result_of(driver, path):
    return driver.find_element(By.CSS_SELECTOR, f'[data-result="{path}"]')


def run(driver, path, until, timeout=30):
    driver.find_element(By.CSS_SELECTOR, f'button[data-action="run"][data-path="{path}"]').click()
    WebDriverWait(driver, timeout).until(lambda d: until(result_of(d, path).text))
    return result_of(driver, path).text


def main():
    url, screenshot = sys.argv[1], sys.argv[2]
    driver = browser()
    seen = {}
    try:
        driver.get(url)
        assert driver.title == "Service graph demo shop", driver.title
        paths = [b.get_attribute("data-path") for b in driver.find_elements(By.CSS_SELECTOR, 'button[data-action="run"]')]
        assert paths == ["/simple", "/nested", "/error", "/chain", "/delayed-chain", "/multi-service"], paths

        for path in paths:
            text = run(driver, path, lambda t: TRACE_ID.search(t))
            seen[path] = text
            want = "HTTP 500" if path == "/error" else "HTTP 200"
            assert want in text, f"{path}: {text}"

        link = driver.find_element(By.CSS_SELECTOR, '[data-result="/chain"] a.trace-link')
        href = urllib.parse.unquote(link.get_attribute("href"))
        trace_id = TRACE_ID.search(seen["/chain"]).group(0)
        assert href.startswith("http://localhost:3000/explore?"), href
        assert trace_id in href and '"uid":"tempo"' in href, href

        burst = driver.find_element(By.CSS_SELECTOR, 'button[data-action="burst"][data-path="/simple"]')
        burst.click()
        WebDriverWait(driver, 60).until(lambda d: "20 sent" in result_of(d, "/simple").text)
        seen["burst /simple"] = result_of(driver, "/simple").text
        assert "20 ok, 0 failed" in seen["burst /simple"], seen["burst /simple"]

        Select(driver.find_element(By.ID, "fail")).select_by_value("payments")
        seen["/chain?fail=payments"] = run(driver, "/chain", lambda t: "HTTP 502" in t)
        assert TRACE_ID.search(seen["/chain?fail=payments"]), seen["/chain?fail=payments"]

        # A name the server does not know (here a hostile one, put into the selector by hand):
        # the page shows the 400's message and the valid names, as text, never as markup.
        hostile = '<img src=x onerror="window.pwned=1">'
        driver.execute_script(
            "const o = document.createElement('option'); o.value = arguments[0]; o.textContent = 'hostile';"
            "document.getElementById('fail').append(o);", hostile)
        Select(driver.find_element(By.ID, "fail")).select_by_visible_text("hostile")
        text = run(driver, "/simple", lambda t: "HTTP 400" in t)
        seen["/simple?fail=<hostile>"] = text
        assert "names no service" in text and "valid: frontend, checkout" in text, text
        assert "<img" in text, f"shown as text: {text}"
        assert not driver.find_elements(By.CSS_SELECTOR, '[data-result="/simple"] img')
        assert driver.execute_script("return window.pwned === undefined"), "markup was run"
        Select(driver.find_element(By.ID, "fail")).select_by_value("")

        graph = driver.find_element(By.ID, "graph-link").get_attribute("href")
        assert "serviceMap" in urllib.parse.unquote(graph), graph
        service_map = driver.find_element(By.ID, "map-link")
        assert service_map.text == "Service map" and service_map.get_attribute("href").endswith("/graph"), service_map
        driver.save_screenshot(screenshot)
    finally:
        driver.quit()
    print(json.dumps(seen, indent=2))


if __name__ == "__main__":
    main()
