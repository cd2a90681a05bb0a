"""The HTML report opened in a real headless Chromium: no injected script runs, and
every image loads, whatever the input file names.

Skips when no Chromium is installed, unless ``ADJINV_REQUIRE_BROWSER=1`` (set by the
CI script, which installs Debian's ``chromium``), where a missing browser fails.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from adjinv.cli import main

INJECT = "<img src=x onerror=document.title=1337>"

# A page next to the report that loads it in a frame and reports, once every image has
# settled, the report's title and which images failed to load. The report's own policy
# forbids scripts in it; the harness is a separate document.
HARNESS = """<!doctype html><html><head><title>harness</title></head><body>
<iframe id="f" src="PAGE"></iframe><pre id="r">pending</pre>
<script>
document.getElementById('f').addEventListener('load', function () {
  var d = this.contentDocument;
  var imgs = Array.from(d.images);
  imgs.forEach(function (i) { i.loading = 'eager'; });
  var check = function () {
    if (imgs.some(function (i) { return !i.complete; })) { setTimeout(check, 50); return; }
    document.getElementById('r').textContent = JSON.stringify({
      title: d.title, images: imgs.length,
      broken: imgs.filter(function (i) { return i.naturalWidth === 0; })
                  .map(function (i) { return i.getAttribute('src'); })});
  };
  check();
});
</script></body></html>
"""


def _browser() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    if os.environ.get("ADJINV_REQUIRE_BROWSER") == "1":
        pytest.fail("ADJINV_REQUIRE_BROWSER=1 but no chromium on PATH (apt-get install chromium)")
    pytest.skip("no chromium on PATH (apt-get install chromium); CI installs it")


def open_in_browser(folder: Path, page: str, tmp: Path) -> dict:
    """Load ``folder/page`` through the harness; the harness's verdict as a dict."""
    harness = folder / f"harness-{page}"
    harness.write_text(HARNESS.replace("PAGE", page))
    cmd = [_browser(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
           f"--user-data-dir={tmp / 'profile'}", "--allow-file-access-from-files",
           "--virtual-time-budget=15000", "--dump-dom", harness.as_uri()]
    try:
        dom = subprocess.run(cmd, capture_output=True, text=True, timeout=180,
                             env={**os.environ, "HOME": str(tmp)}).stdout
    finally:
        harness.unlink()
    m = re.search(r'<pre id="r">(.*?)</pre>', dom, re.S)
    assert m and m.group(1) != "pending", dom[-2000:]
    return json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&"))


def _photo(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    arr = np.kron(rng.random((10, 12, 3)), np.ones((8, 8, 1)))
    Image.fromarray((arr * 255).astype(np.uint8)).save(path, format="PNG")
    return path


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    _browser()
    d = tmp_path_factory.mktemp("browser")
    (d / "in").mkdir()
    names = [f"{INJECT}.png", "a#b?c%20d.png", "plain.png"]
    imgs = [_photo(d / "in" / n, i) for i, n in enumerate(names)]
    assert main(["invert", *map(str, imgs), "--out", str(d / "out"), "--size", "32",
                 "--channels", "1"]) == 0
    return d / "out"


def test_no_injected_script_runs_and_every_image_loads(report, tmp_path):
    res = open_in_browser(report, "index.html", tmp_path)
    assert res["title"] == "adjinv inversion report"
    assert res["images"] >= 3 * 13 and res["broken"] == []


def test_escaping_alone_stops_the_script(report, tmp_path):
    """The same page without its script-forbidding policy: escaping is enough."""
    page = (report / "index.html").read_text()
    no_csp = re.sub(r"<meta http-equiv='Content-Security-Policy'[^>]*>", "", page)
    assert no_csp != page
    (report / "nocsp.html").write_text(no_csp)
    res = open_in_browser(report, "nocsp.html", tmp_path)
    assert res["title"] == "adjinv inversion report" and res["broken"] == []


def test_the_harness_sees_an_injection(report, tmp_path):
    """Control: an unescaped heading does run its script, so the checks above can fail."""
    (report / "bad.html").write_text(f"<!doctype html><title>t</title><h2>{INJECT}</h2>")
    assert open_in_browser(report, "bad.html", tmp_path)["title"] == "1337"
