"""The documentation site builds strictly, and what a reader sees has no raw TeX or reST markup:
in the built HTML, and in headless Chromium with the network off (when Chromium is installed;
tests/install_chromium.sh installs it where it can). Screenshots go to build/screenshots."""

from __future__ import annotations

import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
RAW_MARKUP = ("$$", "\\(", "\\[", "\\mathcal", "\\frac", "\\theta", "\\sum", "\\lambda", ":math:", ":class:",
              ":func:", ":meth:", ":mod:", ".. math::")  # fmt: skip
SCREENSHOTS = {"concepts": "concepts/index.html", "reference": "reference/index.html"}


class VisibleText(HTMLParser):
    """The text a reader sees: everything but scripts, styles, code and rendered maths."""

    HIDDEN = frozenset({"script", "style", "code", "pre", "math"})

    def __init__(self):
        super().__init__()
        self.depth, self.parts, self.maths = 0, [], 0

    def handle_starttag(self, tag, attrs):
        self.maths += tag == "math"
        self.depth += tag in self.HIDDEN

    def handle_endtag(self, tag):
        self.depth -= tag in self.HIDDEN

    def handle_data(self, data):
        if self.depth == 0:
            self.parts.append(data)


def visible(html: str) -> VisibleText:
    parser = VisibleText()
    parser.feed(html)
    return parser


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def pages(site: Path) -> list[Path]:
    found = sorted(p for p in site.rglob("*.html") if p.name != "404.html")
    assert len(found) >= 10
    return found


def assert_no_raw_markup(text: str, where: str) -> None:
    found = [marker for marker in RAW_MARKUP if marker in text]
    assert not found, f"{where} shows raw markup {found}: ...{text[text.find(found[0]) - 80 :][:160]}..."


def test_built_pages_render_their_maths_and_markup(site):
    for page in pages(site):
        parsed = visible(page.read_text())
        assert_no_raw_markup("".join(parsed.parts), str(page.relative_to(site)))
    assert visible((site / SCREENSHOTS["concepts"]).read_text()).maths >= 5  # the concepts page's equations
    reference = (site / SCREENSHOTS["reference"]).read_text()
    assert visible(reference).maths >= 20 and 'href="#laplace_tf.FullPosterior"' in reference


def test_pages_in_headless_chromium_offline(site):
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        pytest.skip("no Chromium on this machine (tests/install_chromium.sh installs it with apt)")
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--host-resolver-rules=MAP * ~NOTFOUND"]
    for page in pages(site):
        dom = subprocess.run([*flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=60)
        assert dom.returncode == 0, dom.stderr[-2000:]
        assert_no_raw_markup("".join(visible(dom.stdout).parts), f"{page.relative_to(site)} in Chromium")
    shots = ROOT / "build" / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    for name, page in SCREENSHOTS.items():
        target = shots / f"{name}.png"
        shot = [*flags, "--window-size=1280,1600", f"--screenshot={target}", (site / page).as_uri()]
        subprocess.run(shot, capture_output=True, timeout=60, check=False)
        assert target.stat().st_size > 20_000
