"""The report and the kedro-viz site, opened the way a person opens them: in a browser.

Headless Chromium (Debian's ``chromium`` package, which ``.ci/run`` installs) loads
``report.html`` from the shared test-size run over ``file://``, and the static site of
``kedro viz build`` served on 127.0.0.1; each page is rendered, screenshot and its text
checked. Without Chromium the tests skip, saying how to install it, unless
``MEDGEN_REQUIRE_BROWSER`` is set (as ``.ci/run`` does): then they fail.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.kedro_project import make_project
from tests.whole_project_run import PIPELINES, ProjectRun, whole_project_run

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
WINDOW = (1280, 1600)


@pytest.fixture(scope="session")
def project_run(tmp_path_factory) -> ProjectRun:
    return whole_project_run(tmp_path_factory)


@pytest.fixture(scope="module")
def browser() -> str:
    found = next((path for name in BROWSERS if (path := shutil.which(name))), None)
    if found is None:
        message = (
            "headless Chromium is not installed (Debian: apt-get install -y chromium; "
            ".ci/run installs it)"
        )
        if os.environ.get("MEDGEN_REQUIRE_BROWSER"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def render(browser: str, url: str, screenshot: Path, wait_ms: int = 0) -> str:
    """The DOM of ``url`` after it rendered (and ``wait_ms`` of page time for scripts),
    with a screenshot of the first screen written to ``screenshot``."""
    profile = screenshot.parent / f"{screenshot.stem}-profile"
    command = [
        browser,
        "--headless",
        "--no-sandbox",  # CI containers run as root
        "--disable-gpu",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        f"--screenshot={screenshot}",
        "--dump-dom",
    ]
    if wait_ms:
        command.append(f"--virtual-time-budget={wait_ms}")
    done = subprocess.run([*command, url], capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


class _Text(HTMLParser):
    """The text a reader sees: everything outside <style>, <script> and <title>."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._hidden = 0

    def handle_starttag(self, tag, attrs):
        self._hidden += tag in ("style", "script", "title")

    def handle_endtag(self, tag):
        self._hidden -= tag in ("style", "script", "title")

    def handle_data(self, data):
        if not self._hidden:
            self.parts.append(data)


def visible_text(dom: str) -> str:
    parser = _Text()
    parser.feed(dom)
    return " ".join(" ".join(parser.parts).split())


def assert_drawn(screenshot: Path) -> None:
    """The screenshot is the window's size and not a blank page."""
    with Image.open(screenshot) as image:
        assert image.size == WINDOW
        pixels = np.asarray(image.convert("L"), dtype=np.float64)
    assert pixels.std() > 10 and (pixels < 128).mean() > 0.005


def test_report_opens_offline_with_every_source_and_no_nan(
    browser: str, project_run: ProjectRun, tmp_path
):
    screenshot = tmp_path / "report.png"
    dom = render(browser, project_run.report.as_uri(), screenshot)
    text = visible_text(dom)
    assert_drawn(screenshot)
    metrics = json.loads(project_run.metrics.read_text())
    sources = [entry["source"] for entry in metrics["sources"]]
    assert {s.split("/")[0] for s in sources} >= {  # all six pipelines
        "data_processing",
        "autoencoder",
        "latent_diffusion",
        "latent_diffusion_3d",
        "inpainting",
        "text2image_rlhf",
    }
    missing = [s for s in sources if s not in text]
    assert not missing, f"sources not on the rendered page: {missing}"
    assert not re.search(r"\bnan\b", text, flags=re.IGNORECASE), "a NaN reached the page"
    # every embedded picture made it into the page the browser built
    assert dom.count('src="data:image/png;base64,') == project_run.report.read_text().count(
        'src="data:image/png;base64,'
    )
    assert "in_domain (trained on slices_2d_train" in text


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for(url: str, seconds: float = 30.0) -> bytes:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.read()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


@pytest.fixture(scope="module")
def viz_site(tmp_path_factory) -> Path:
    """``kedro viz build`` in a fresh copy of the project (it reads the pipelines, no data)."""
    project = make_project(tmp_path_factory.mktemp("viz"))
    env = {**os.environ, "DO_NOT_TRACK": "1", "KEDRO_DISABLE_TELEMETRY": "1"}
    kedro = Path(sys.executable).with_name("kedro")
    done = subprocess.run(
        [str(kedro), "viz", "build"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return project / "build"


def test_kedro_viz_site_shows_all_six_pipelines(browser: str, viz_site: Path, tmp_path):
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        cwd=viz_site,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        main = json.loads(_wait_for(f"{base}/api/main"))
        listed = {pipeline["id"] for pipeline in main["pipelines"]}
        assert set(PIPELINES) | {"__default__"} <= listed, listed
        screenshot = tmp_path / "viz.png"
        dom = render(browser, f"{base}/", screenshot, wait_ms=20000)
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert_drawn(screenshot)
    text = visible_text(dom)
    # the app rendered the default pipeline's graph: its nodes carry their pretty names
    names = [node["name"] for node in main["nodes"] if node["type"] == "task"]
    shown = [name for name in names if name in text]
    assert len(shown) >= len(names) // 2, (shown, text[:500])


def _fake_tools(folder: Path, log: Path, with_chromium: bool) -> None:
    """A PATH of stand-ins that log their calls: uv, apt-get, sudo (and chromium)."""
    folder.mkdir()
    logger = f'#!/bin/sh\necho "$(basename "$0") $* MEDGEN_REQUIRE_BROWSER=$MEDGEN_REQUIRE_BROWSER" >> {log}\n'
    tools = {"uv": logger, "apt-get": logger, "sudo": '#!/bin/sh\nexec "$@"\n'}
    if with_chromium:
        tools["chromium"] = logger
    for name, script in tools.items():
        (folder / name).write_text(script)
        (folder / name).chmod(0o755)
    for name in ("dirname", "id", "env", "basename", "sh"):
        (folder / name).symlink_to(shutil.which(name))


@pytest.mark.parametrize("with_chromium", [False, True])
def test_ci_installs_chromium_only_when_missing_then_runs_the_readme_test_command(
    tmp_path, with_chromium: bool
):
    from tests.kedro_project import REPO

    (tmp_path / "repo/.ci").mkdir(parents=True)
    shutil.copy(REPO / ".ci/run", tmp_path / "repo/.ci/run")
    log = tmp_path / "calls.log"
    _fake_tools(tmp_path / "bin", log, with_chromium)
    done = subprocess.run(
        [shutil.which("bash"), str(tmp_path / "repo/.ci/run")],
        env={"PATH": str(tmp_path / "bin")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    calls = [line.rsplit(" MEDGEN_REQUIRE_BROWSER=", 1) for line in log.read_text().splitlines()]
    installs = [call for call, _ in calls if call.startswith("apt-get")]
    assert installs == ([] if with_chromium else ["apt-get update", "apt-get install -y chromium"])
    # the README's test command, run last, with a missing browser made a failure
    readme = (REPO / "README.md").read_text()
    assert "uv run pytest        # the tests" in readme
    assert calls[-1] == ["uv run pytest", "1"]
