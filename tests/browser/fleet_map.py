"""The fleet's service map in headless Chromium: one replica's /graph draws the nodes and
edges its /api/graph (the fleet's merged figures) lists, and says which replica is missing.

    python fleet_map.py GRAPH_URL API_URL MISSING_ADDRESS SCREENSHOT

Run by graphgen/tests/fleet.rs with three graphgen processes, one of them stopped.
"""

import json
import sys
import urllib.request

from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from landing import browser


def main():
    graph_url, api_url, missing, screenshot = sys.argv[1:5]
    with urllib.request.urlopen(api_url, timeout=10) as r:
        api = json.load(r)
    nodes = {n["id"] for n in api["nodes"]}
    edges = {(e["source"], e["target"]) for e in api["edges"]}
    assert api["missing_replicas"] == 1, api["replicas"]
    driver = browser()
    try:
        driver.get(graph_url + "?refresh=off")
        WebDriverWait(driver, 20).until(
            lambda d: d.find_elements(By.CSS_SELECTOR, "g.node"))
        drawn_nodes = {g.get_attribute("data-name")
                       for g in driver.find_elements(By.CSS_SELECTOR, "g.node")}
        drawn_edges = {(g.get_attribute("data-client"), g.get_attribute("data-server"))
                       for g in driver.find_elements(By.CSS_SELECTOR, "g.edge")}
        assert drawn_nodes == nodes, f"drawn {sorted(drawn_nodes)}, API {sorted(nodes)}"
        assert drawn_edges == edges, f"drawn {sorted(drawn_edges)}, API {sorted(edges)}"
        fleet = driver.find_element(By.ID, "fleet")
        text = fleet.text
        assert "2 of 3 graphgen instances" in text, text
        assert missing in text, f"{missing!r} not named in {text!r}"
        assert "warning" in fleet.get_attribute("class"), "a missing replica stands out"
        colour = driver.execute_script(
            "return getComputedStyle(document.getElementById('fleet')).color")
        assert colour == "rgb(207, 34, 46)", colour
        driver.save_screenshot(screenshot)
        print(f"fleet map: {len(drawn_nodes)} nodes, {len(drawn_edges)} edges; {text}")
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
