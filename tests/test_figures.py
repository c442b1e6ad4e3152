"""The committed figures open offline: every page loads the one shared ``plotly.min.js``."""

import re
from pathlib import Path

from plotly.offline import get_plotlyjs_version

from roleprobe.app.report import PLOTLYJS, plotlyjs_version

FIGURES = Path(__file__).resolve().parents[1] / "figures"
SCRIPT = re.compile(r"<script[^>]*\bsrc=\"([^\"]+)\"")


def test_every_figure_loads_the_shared_plotly_js_beside_it():
    pages = sorted(FIGURES.glob("*.html"))
    assert pages, f"no figures in {FIGURES}"
    for page in pages:
        sources = SCRIPT.findall(page.read_text(encoding="utf-8"))
        assert sources == [PLOTLYJS], f"{page.name} loads {sources}, not only {PLOTLYJS}"


def test_the_shared_plotly_js_is_the_installed_version():
    bundle = FIGURES / PLOTLYJS
    assert bundle.is_file(), f"{bundle} is missing: the figures would render blank"
    assert plotlyjs_version(bundle) == get_plotlyjs_version(), (
        f"{bundle} is plotly.js {plotlyjs_version(bundle)}, the installed plotly bundles "
        f"{get_plotlyjs_version()}: rerun the analyses (or copy plotly's package_data bundle)"
    )
