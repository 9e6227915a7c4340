"""Drives graphgen's service map (/graph) in headless Chromium (Debian's chromium +
chromium-driver). Imported by tests/stack/test_e2e.py; each function fails with a message.
"""

import json
import random
import re
import urllib.parse
import urllib.request

from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from landing import browser

TRACE_ID = re.compile(r"^[0-9a-f]{32}$")


def boxes_of(driver, part):
    """name -> (left, top, right, bottom) on screen of each node's `part` (a CSS selector)."""
    return driver.execute_script("""
        const out = {};
        for (const g of document.querySelectorAll("g.node")) {
          const r = g.querySelector(arguments[0]).getBoundingClientRect();
          out[g.dataset.name] = [r.left, r.top, r.right, r.bottom];
        }
        return out;""", part)


def node_boxes(driver):
    return boxes_of(driver, "circle.base")


def label_boxes(driver):
    return boxes_of(driver, "text.name")


def edge_label_boxes(driver):
    """client -> server: the box around each edge's figures."""
    return driver.execute_script("""
        const out = {};
        for (const g of document.querySelectorAll("g.edge")) {
          const a = g.querySelector("text.rate").getBoundingClientRect();
          const b = g.querySelector("text.err").getBoundingClientRect();
          out[g.dataset.client + " -> " + g.dataset.server] =
            [Math.min(a.left, b.left), a.top, Math.max(a.right, b.right), b.bottom];
        }
        return out;""")


def overlapping(boxes):
    names = sorted(boxes)
    pairs = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            (l1, t1, r1, b1), (l2, t2, r2, b2) = boxes[a], boxes[b]
            if l1 < r2 and l2 < r1 and t1 < b2 and t2 < b1:
                pairs.append((a, b))
    return pairs


def no_script_ran(driver):
    try:
        driver.switch_to.alert
        raise AssertionError("an alert opened: markup from a name was run")
    except NoAlertPresentException:
        pass
    assert driver.execute_script("return window.pwned === undefined"), "markup from a name was run"
    assert len(driver.find_elements(By.TAG_NAME, "script")) == 1, "only the page's own script"


def check_empty(url):
    driver = browser()
    try:
        driver.get(url)
        text = driver.find_element(By.ID, "empty").text
        assert "No edges yet" in text and ":4317" in text and "--wait" in text, text
        assert not driver.find_elements(By.TAG_NAME, "svg")
    finally:
        driver.quit()


def check_demo(url, api_url, expected_nodes, failing_edges, known_traces, screenshot):
    """The demo's map: every node, the failing edges marked, rates, the window switch, and a
    click on an edge listing trace ids graphgen holds as exemplars. Returns what it saw."""
    driver = browser()
    driver.set_window_size(1800, 1000)  # the README's screenshot: the whole demo map and its details
    seen = {}
    try:
        driver.get(url)
        assert driver.title == "Service map · graphgen", driver.title
        nodes = {g.get_attribute("data-name"): g.get_attribute("data-kind")
                 for g in driver.find_elements(By.CSS_SELECTOR, "g.node")}
        seen["nodes"] = nodes
        assert set(expected_nodes) <= set(nodes), f"missing {set(expected_nodes) - set(nodes)}"
        assert nodes["postgres"] == "database" and nodes["user"] == "virtual" and nodes["payment-gateway"] == "virtual", nodes
        assert not overlapping(node_boxes(driver)), overlapping(node_boxes(driver))
        assert not overlapping(edge_label_boxes(driver)), overlapping(edge_label_boxes(driver))

        edges = {(g.get_attribute("data-client"), g.get_attribute("data-server")): g
                 for g in driver.find_elements(By.CSS_SELECTOR, "g.edge")}
        for edge in failing_edges:
            assert "failing" in edges[edge].get_attribute("class"), f"{edge} not marked failing"
        rates = {e: g.find_element(By.CSS_SELECTOR, "text.rate").text for e, g in edges.items()}
        seen["rates"] = {f"{c} -> {s}": r for (c, s), r in rates.items()}
        assert all(re.match(r"^\d+(\.\d+)? req/s$", r) and float(r.split()[0]) > 0 for r in rates.values()), rates

        # The window switch: the page says 1m, and the 1m link is the current one.
        old_bar = driver.find_element(By.ID, "bar")
        driver.find_element(By.LINK_TEXT, "1m").click()
        WebDriverWait(driver, 10).until(lambda d: d.find_element(By.ID, "bar") != old_bar)
        WebDriverWait(driver, 10).until(lambda d: "window=1m" in d.current_url)
        WebDriverWait(driver, 10).until(
            lambda d: d.find_element(By.CSS_SELECTOR, "#windows a.current").text == "1m")
        assert "over the last 1m" in driver.find_element(By.ID, "bar").text

        # A click on a failing edge: its figures and recent trace ids.
        client, server = failing_edges[0]
        driver.find_element(
            By.XPATH, f'//*[local-name()="g" and @data-client="{client}" and @data-server="{server}"]'
                      '/*[local-name()="text" and contains(@class, "rate")]').click()
        WebDriverWait(driver, 10).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#details[data-kind=edge]"))
        details = driver.find_element(By.ID, "details")
        assert f"{client} → {server}" in details.text, details.text
        ids = [c.text for c in details.find_elements(By.CSS_SELECTOR, "code.trace-id")]
        seen["clicked"] = {"edge": f"{client} -> {server}", "trace_ids": ids, "details": details.text}
        assert ids and all(TRACE_ID.match(i) for i in ids), ids
        with urllib.request.urlopen(api_url + "?window=1m", timeout=10) as r:
            api = json.loads(r.read())
        held = {i for e in api["edges"] for i in e["detail__recent_trace_ids"].split()}
        assert set(ids) <= held, f"{ids} are not graphgen's exemplars {held}"
        assert set(ids) & set(known_traces), f"none of {ids} is a trace the demo answered with"
        links = [a.get_attribute("href") for a in details.find_elements(By.CSS_SELECTOR, "a.grafana")]
        assert links and all(i in urllib.parse.unquote(h) for i, h in zip(ids, links)), links
        assert "selected" in driver.find_element(
            By.XPATH, f'//*[local-name()="g" and @data-client="{client}" and @data-server="{server}"]').get_attribute("class")

        # Pause: the toggle says so and survives a reload of the page.
        driver.find_element(By.ID, "refresh-toggle").click()
        WebDriverWait(driver, 10).until(lambda d: "refresh=off" in d.current_url)
        assert driver.find_element(By.ID, "refresh-toggle").text.startswith("Resume")
        driver.save_screenshot(screenshot)
        no_script_ran(driver)
    finally:
        driver.quit()
    return seen


def synthetic_spans(services, hostile):
    """OTLP/JSON: a layered call graph over `services` (each calls 1-2 in the next layers)
    plus every hostile name calling the first service."""
    rng = random.Random(7)
    calls = []
    for i, name in enumerate(services):
        for _ in range(rng.choice([1, 2])):
            j = rng.randrange(i + 1, len(services) + 3)
            if j < len(services):
                calls.append((name, services[j]))
    calls += [(h, services[0]) for h in hostile]
    resources = {}
    for n, (client, server) in enumerate(calls):
        trace = f"{n + 1:032x}"
        parent = f"{2 * n + 1:016x}"
        child = f"{2 * n + 2:016x}"
        start = 1_700_000_000_000_000_000 + n
        for service, span in [
            (client, {"traceId": trace, "spanId": parent, "name": "call", "kind": 3,
                      "startTimeUnixNano": str(start), "endTimeUnixNano": str(start + 30_000_000)}),
            (server, {"traceId": trace, "spanId": child, "parentSpanId": parent, "name": "serve", "kind": 2,
                      "startTimeUnixNano": str(start + 1_000_000), "endTimeUnixNano": str(start + 20_000_000)}),
        ]:
            resources.setdefault(service, []).append(span)
    body = {"resourceSpans": [
        {"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": s}}]},
         "scopeSpans": [{"spans": spans}]}
        for s, spans in resources.items()]}
    return body, calls


def send_json(otlp_http_url, body):
    request = urllib.request.Request(otlp_http_url, data=json.dumps(body).encode(),
                                     headers={"content-type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=10) as r:
        assert r.status == 200, r.status


def check_large_and_hostile(url, services, hostile, screenshot):
    """50 services and hostile names: every node drawn, none overlapping, names as text."""
    driver = browser()
    try:
        driver.get(url)
        boxes = node_boxes(driver)
        assert set(services) | set(hostile) <= set(boxes), f"missing {(set(services) | set(hostile)) - set(boxes)}"
        assert not overlapping(boxes), overlapping(boxes)
        labels = label_boxes(driver)
        assert not overlapping(labels), f"labels overlap: {overlapping(labels)}"
        figures = edge_label_boxes(driver)
        assert not overlapping(figures), f"edge figures overlap: {overlapping(figures)}"
        width = driver.execute_script("return document.querySelector('#map svg').getBoundingClientRect().width")
        for name, (left, top, right, bottom) in labels.items():
            assert right - left < 240, f"{name!r}: a label {right - left}px wide"
        titles = driver.execute_script(
            "return [...document.querySelectorAll('g.node > title')].map(t => t.textContent)")
        for h in hostile:
            assert any(t.startswith(h) for t in titles), f"{h!r} not shown as text in {titles}"
        no_script_ran(driver)
        assert width > 0
        driver.save_screenshot(screenshot)
    finally:
        driver.quit()
