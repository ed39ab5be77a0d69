"""The web UI in a real headless Chromium (Debian's, driven by Playwright) against the real
system (`cicd serve` on the embedded default, local executor): log in, dispatch a workflow, watch
the run page turn green live, follow a job's log live, search it, download an artifact, and
cancel a running job.

Screenshots of the run page and a job page are written to $CICD_TEST_OUTPUT (default
test-output/) on every run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.gitrepo import Origin
from tests.test_serve import (
    BANNER_LOGIN,
    BANNER_URL,
    ServeProcess,
    processes_with_data_dir,
    serve_env,
)

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
OUTPUT = Path(os.environ.get("CICD_TEST_OUTPUT", Path(__file__).parents[2] / "test-output"))

WORKFLOW = """\
name: demo
on:
  workflow_dispatch:
    inputs:
      pause:
        type: number
        default: 0
jobs:
  build:
    runs-on: linux
    steps:
      - name: Print lines
        run: |
          echo "::group::setup"
          echo "preparing the build"
          echo "::endgroup::"
          for i in $(seq 1 40); do echo "line $i"; sleep 0.1; done
          echo "the needle in the log"
      - name: Report
        run: mkdir -p dist && echo "built at ${{ github.sha }}" > dist/report.txt
      - uses: actions/upload-artifact@v4
        with:
          name: report
          path: dist
  test:
    needs: build
    runs-on: linux
    steps:
      - name: Wait
        run: |
          echo "waiting ${{ inputs.pause }} s"
          sleep ${{ inputs.pause }}
          echo "tested"
"""


@pytest.fixture(scope="module")
def system(tmp_path_factory) -> Iterator[dict]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: bin/test installs Debian's chromium")
    root = tmp_path_factory.mktemp("browser")
    data_dir = root / "data"
    env = serve_env(data_dir, CICD_EXECUTOR="local")
    origin = Origin(root / "origin")
    origin.commit({".cicd/workflows/demo.yml": WORKFLOW})
    server = ServeProcess(env)
    try:
        url = server.wait_for(BANNER_URL).group(1)
        username, password = server.wait_for(BANNER_LOGIN).groups()
        setup = (
            "from runs.models import Organisation, Repository\n"
            "o = Organisation.objects.create(slug='acme', name='Acme')\n"
            "Repository.objects.create(organisation=o, slug='widgets',\n"
            f"    clone_url={str(origin.path)!r})\n"
        )
        done = subprocess.run(
            [sys.executable, "-m", "cicd.cli", "manage", "shell", "-c", setup],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        yield {"url": url.rstrip("/"), "username": username, "password": password, "env": env}
    finally:
        assert server.stop() == 0, server.output_tail()
    assert processes_with_data_dir(data_dir) == []


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield launched
        launched.close()


@pytest.fixture
def page(browser, system):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(system["url"] + "/accounts/login/")
    page.fill("input[name=username]", system["username"])
    page.fill("input[name=password]", system["password"])
    page.click("#login-submit")
    page.wait_for_url(system["url"] + "/")
    yield page
    context.close()


def dispatch(page, system, pause: int) -> str:
    """Start the demo workflow from the manual-run form; returns the run page's URL."""
    page.goto(system["url"] + "/acme/widgets/dispatch/?ref=main")
    page.fill("[data-input=pause] input", str(pause))
    page.click("#dispatch-submit")
    page.wait_for_url(re.compile(r".*/acme/widgets/runs/\d+/$"))
    return page.url


def test_dispatch_watch_the_run_turn_green_and_follow_the_log_live(page, system):
    run_url = dispatch(page, system, pause=0)
    # The page is not reloaded: the graph follows the run over the WebSocket.
    page.wait_for_selector("#job-graph .graph-node[data-workflow-job=build][data-state=running]")
    page.locator("#job-graph .graph-node[data-workflow-job=build] a.graph-job").first.click()
    page.wait_for_url(re.compile(r".*/jobs/\d+/$"))
    job_url = page.url

    # Lines arrive while the step still runs: an early line first, the last one later.
    page.wait_for_selector(".log-line:has-text('line 3')")
    assert page.locator(".log-line:has-text('the needle in the log')").count() == 0
    page.wait_for_selector(".log-line:has-text('the needle in the log')")
    assert page.locator(".log-line:has-text('preparing the build')").count() <= 1

    page.fill("#log-search", "needle")
    page.press("#log-search", "Enter")
    page.wait_for_function(
        "document.getElementById('log-search-count').textContent.includes('1 / 1')"
    )
    OUTPUT.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(OUTPUT / "job-page.png"), full_page=True)

    raw = page.request.get(job_url + "log.txt")
    assert raw.ok and "the needle in the log" in raw.text()

    page.goto(run_url)
    page.wait_for_selector("#run-state[data-state=success]", timeout=120_000)
    for job in ("build", "test"):
        node = page.locator(f"#job-graph .graph-node[data-workflow-job={job}]")
        assert node.get_attribute("data-state") == "success"
    page.screenshot(path=str(OUTPUT / "run-page.png"), full_page=True)

    page.reload()
    with page.expect_download() as download:
        page.click("#artifacts a:has-text('report')")
    with zipfile.ZipFile(download.value.path()) as archive:
        assert archive.read("report.txt").decode().startswith("built at ")


def test_cancel_a_running_job_and_see_it_turn_cancelled(page, system):
    run_url = dispatch(page, system, pause=300)
    page.wait_for_selector(
        "#job-graph .graph-node[data-workflow-job=test][data-state=running]", timeout=120_000
    )
    page.click("#cancel-run")
    page.wait_for_url(run_url)
    page.wait_for_selector("#run-state[data-state=cancelled]", timeout=60_000)
    node = page.locator("#job-graph .graph-node[data-workflow-job=test]")
    assert node.get_attribute("data-state") == "cancelled"
    page.screenshot(path=str(OUTPUT / "run-page-cancelled.png"), full_page=True)


MILLION = 1_000_000
LONG_LOG = """\
import json
from runs.models import Job, LogChunk, Repository
from runs.scheduling import RunRequest, create_run
workflow = "on: push\\njobs:\\n  noisy:\\n    runs-on: no-such-runner\\n"
workflow += "    steps:\\n      - run: echo\\n"
run = create_run(
    Repository.objects.get(slug="widgets"),
    RunRequest(workflow_path=".cicd/workflows/noisy.yml", source=workflow, event="push",
               ref="refs/heads/main", sha="f" * 40, idempotency_key="long-log"),
)
job = Job.objects.get(run=run)
size = 1000
LogChunk.objects.bulk_create(
    LogChunk(job=job, step_index=0, sequence=n, offset=n * size, line_count=size,
             text="\\n".join(json.dumps([0.0, "stdout", f"row {n * size + i + 1}"])
                             for i in range(size)))
    for n in range(LINES // size)
)
print(f"/acme/widgets/runs/{run.number}/jobs/{job.id}/")
"""


def test_a_job_page_with_a_million_lines_keeps_only_the_visible_rows(page, system):
    script = LONG_LOG.replace("LINES", str(MILLION))
    env_lines = subprocess.run(
        [sys.executable, "-m", "cicd.cli", "manage", "shell", "-c", script],
        env=system["env"], capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert env_lines.returncode == 0, env_lines.stderr
    job_path = env_lines.stdout.strip().splitlines()[-1]
    page.goto(system["url"] + job_path)
    page.wait_for_function(
        f"window.cicdLog && window.cicdLog.buffer.length === {MILLION}", timeout=180_000
    )
    assert page.locator(".log-line").count() < 300
    page.goto(system["url"] + job_path + "#L999999")
    page.wait_for_function(
        f"window.cicdLog && window.cicdLog.buffer.length === {MILLION}", timeout=180_000
    )
    selected = page.locator(".log-line-selected")
    selected.wait_for()
    assert "row 999999" in selected.inner_text()
    page.fill("#log-search", "row 500000")
    page.press("#log-search", "Enter")
    page.wait_for_function(
        "document.getElementById('log-search-count').textContent.includes('/ 1')"
    )
    assert page.locator(".log-line:has-text('row 500000')").count() == 1
    assert page.locator(".log-line").count() < 300
