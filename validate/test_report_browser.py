"""The demo's report in a real browser (``make validate``): headless Chromium at 1280 px.

Needs Debian's ``chromium`` package (``apt-get install -y chromium``); skipped with a message
when it is absent. The page is loaded from a file with the network disabled (an unreachable
proxy and no host resolution), so anything fetched from outside would fail to load. A copy of
the report gets a small script that records, once the page has loaded, whether every ``<img>``
decoded (``complete`` and a natural width > 0) and which elements are wider than the viewport;
``--dump-dom`` prints the result. A screenshot of the whole page is written too (its path is
printed; ``CALIPERS_BROWSER_SHOT=FILE`` puts it elsewhere), to be looked at.

The screenshot in docs/report-demo.png was made the same way from ``calipers demo`` (10 folds).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from calipers.experiment.runner import demo_config, run_experiment

pytestmark = pytest.mark.slow

WIDTH = 1280
_CHECK = """<script>
window.addEventListener('load', () => {
  const vw = document.documentElement.clientWidth;
  const imgs = [...document.images].map(i => ({alt: i.alt, ok: i.complete && i.naturalWidth > 0,
                                                width: i.getBoundingClientRect().width}));
  const wide = [...document.querySelectorAll('body *')]
    .filter(e => e.getBoundingClientRect().right > vw + 0.5)
    .map(e => e.tagName + (e.className ? '.' + e.className : ''));
  const out = document.createElement('pre');
  out.id = 'calipers-check';
  out.textContent = JSON.stringify({viewport: vw, images: imgs, too_wide: wide,
    scroll_width: document.documentElement.scrollWidth,
    height: document.documentElement.scrollHeight});
  document.body.appendChild(out);
});
</script>"""


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("Chromium not installed (Debian: apt-get install -y chromium)")
    return exe


def _run(exe: str, *args: str) -> str:
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           "--proxy-server=127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND",
           "--virtual-time-budget=10000", *args]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout


def check_page(html: Path, screenshot: Path, *, width: int = WIDTH) -> dict:
    """Load ``html`` offline at ``width`` px; return the in-page check and save a screenshot."""
    exe = _chromium()
    probe = html.with_name(html.stem + ".check.html")
    probe.write_text(html.read_text(encoding="utf-8").replace("</body>", _CHECK + "</body>"),
                     encoding="utf-8")
    dom = _run(exe, f"--window-size={width},1000", "--dump-dom", probe.as_uri())
    match = re.search(r'<pre id="calipers-check">(.*?)</pre>', dom, re.S)
    assert match, "the check script did not run"
    found = json.loads(match.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    _run(exe, f"--window-size={width},{found['height'] + 20}", f"--screenshot={screenshot}",
         html.as_uri())
    return found


def test_demo_report_in_chromium(tmp_path):
    run = run_experiment(demo_config(quick=True), tmp_path / "demo")
    shot = Path(os.environ.get("CALIPERS_BROWSER_SHOT", tmp_path / "report-browser.png"))
    found = check_page(run.report, shot)
    assert found["viewport"] == WIDTH
    assert len(found["images"]) >= 6  # fold scores, differences, 2 × (reliability, entropy)
    assert all(img["ok"] for img in found["images"]), found["images"]
    assert found["too_wide"] == [] and found["scroll_width"] <= WIDTH, found
    # figures drawn for the full content width are shown at it (NOTE [Self-contained report])
    widths = sorted(img["width"] for img in found["images"])
    assert widths[-1] >= 0.95 * 1000 - 32  # the page's content width is 1000 px minus padding
    assert shot.stat().st_size > 10_000
    print(f"screenshot: {shot} ({found['height']} px tall); images: {len(found['images'])}")
