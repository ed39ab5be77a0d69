"""The environment page in a real headless Chromium (Debian's, driven by Playwright) against
`cicd serve` on the embedded default: while another process moves a deployment on in the
database (its steps, its traffic split, its outcome), the page shows each change without being
reloaded, by polling its status document.

Screenshots of the page during and after the deployment are written to $CICD_TEST_OUTPUT
(default test-output/).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser.test_ui import CHROMIUM, OUTPUT
from tests.test_serve import BANNER_URL, ServeProcess, processes_with_data_dir, serve_env

pytestmark = pytest.mark.slow

V1 = "shop:1 (sha256:111111111111)"  # as the deployment engine names versions
V2 = "shop:2 (sha256:222222222222)"

# Sets up a public repository (no login needed to watch it) with its production environment
# running v1 and a canary deployment of v2 that has just started its first step, holding the
# lock as a deploying worker does (else the sweep would fail it as abandoned). Then applies one
# change a line (JSON from stdin) to that deployment, as the worker's recorder would, and
# answers "ok" once it is committed.
DRIVER = """\
import json, sys
from datetime import timedelta
from django.utils import timezone
from deployments.models import Deployment, DeploymentStep, Environment
from runs.models import Organisation, Repository
organisation = Organisation.objects.create(slug="acme", name="Acme")
repository = Repository.objects.create(
    organisation=organisation, slug="shop", clone_url="/nowhere/shop.git", is_public=True
)
environment = Environment.objects.create(repository=repository, name="production")
now = timezone.now()
common = dict(environment=environment, ref="refs/heads/main", strategy="canary",
              triggered_by="alice", started_at=now)
Deployment.objects.create(image="shop:1", image_digest="sha256:" + "1" * 64, sha="1" * 40,
                          state="success", finished_at=now, **common)
deployment = Deployment.objects.create(
    image="shop:2", image_digest="sha256:" + "2" * 64, sha="2" * 40, state="in_progress",
    traffic={"V1": 100}, **common)
DeploymentStep.objects.create(deployment=deployment, index=0, name="start 2 replicas of shop:2",
                              started_at=now)
Environment.objects.filter(id=environment.id).update(
    lock_deployment=deployment, lock_token="browser-test",
    lock_expires_at=now + timedelta(hours=1))
print("ready", deployment.id, flush=True)
for line in sys.stdin:
    change = json.loads(line)
    now = timezone.now()
    if "finish_step" in change:
        DeploymentStep.objects.filter(deployment=deployment, index=change["finish_step"]).update(
            outcome="success", finished_at=now)
    if "start_step" in change:
        index, name = change["start_step"]
        DeploymentStep.objects.create(deployment=deployment, index=index, name=name,
                                      started_at=now)
    if "traffic" in change:
        Deployment.objects.filter(id=deployment.id).update(traffic=change["traffic"])
    if "state" in change:
        Deployment.objects.filter(id=deployment.id).update(state=change["state"],
                                                           finished_at=now)
        Environment.objects.filter(lock_deployment=deployment).update(
            lock_deployment=None, lock_token="", lock_expires_at=None)
    print("ok", flush=True)
""".replace("V1", V1)


class Driver:
    """The process that sets the scene and then moves the deployment on, one committed change
    at a time."""

    def __init__(self, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cicd.cli", "manage", "shell", "--no-imports", "-c", DRIVER],
            env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        word, _, deployment = self._answer().partition(" ")
        if word != "ready":
            self.close()
            raise AssertionError("the driver did not start")
        self.deployment = int(deployment)

    def _answer(self) -> str:
        assert self.process.stdout is not None
        return self.process.stdout.readline().strip()

    def apply(self, **change: object) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(change) + "\n")
        self.process.stdin.flush()
        assert self._answer() == "ok"

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        assert self.process.wait(timeout=30) == 0, "the driver failed"


@pytest.fixture(scope="module")
def system(tmp_path_factory) -> Iterator[dict]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: bin/test installs Debian's chromium")
    data_dir = tmp_path_factory.mktemp("environment-page") / "data"
    env = serve_env(data_dir, CICD_EXECUTOR="local")
    server = ServeProcess(env)
    try:
        url = server.wait_for(BANNER_URL).group(1)
        driver = Driver(env)
        try:
            yield {"url": url.rstrip("/"), "driver": driver}
        finally:
            driver.close()
    finally:
        assert server.stop() == 0, server.output_tail()
    assert processes_with_data_dir(data_dir) == []


@pytest.fixture
def page(system) -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(20_000)
        yield page
        browser.close()


def test_the_environment_page_follows_a_deployment_live(page, system):
    driver = system["driver"]
    new = f'.traffic-segment[data-version="{V2}"][data-new=true].traffic-colour-1'
    page.goto(system["url"] + "/acme/shop/environments/production/")
    page.wait_for_selector("#live[data-state=in_progress]")
    page.wait_for_selector(f'.traffic-segment[data-version="{V1}"][data-percent="100"]')
    page.wait_for_selector(".deploy-step[data-index='0'][data-state=running]")
    assert page.inner_text("#lock-holder") == f"#{driver.deployment}"
    # Set once: were the page reloaded, it would be gone.
    page.evaluate("window.notReloaded = true")

    driver.apply(finish_step=0, start_step=[1, "shift 25 % to shop:2"], traffic={V1: 75, V2: 25})
    page.wait_for_selector(f'{new}[data-percent="25"]')
    page.wait_for_selector(f'.traffic-segment[data-version="{V1}"][data-percent="75"]')
    page.wait_for_selector("#live-steps .deploy-step[data-index='1'][data-state=running]")
    assert page.get_attribute("#live-steps .deploy-step[data-index='0']", "data-state") == (
        "success"
    )
    widths = page.eval_on_selector_all(
        "#traffic-bar .traffic-segment", "nodes => nodes.map(node => node.style.width)"
    )
    assert widths == ["75%", "25%"]
    OUTPUT.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(OUTPUT / "environment-canary.png"), full_page=True)

    driver.apply(finish_step=1, traffic={V2: 100}, state="success")
    page.wait_for_selector("#live-state[data-state=success]")
    page.wait_for_selector(f"#now-facts[data-deployment-id='{driver.deployment}']")
    page.wait_for_selector(
        f"tr.deployment-row[data-deployment-id='{driver.deployment}'][data-state=success]"
    )
    page.wait_for_function("document.getElementById('lock').innerText === 'free'")
    row = f"tr.deployment-row[data-deployment-id='{driver.deployment}']"
    assert page.inner_text(f"{row} .deployment-steps summary") == "2 steps"
    # The new version keeps its colour, now alone.
    assert page.locator("#traffic-bar .traffic-segment").count() == 1
    assert page.locator(f'{new}[data-percent="100"]').count() == 1
    assert page.evaluate("window.notReloaded") is True
    page.screenshot(path=str(OUTPUT / "environment-deployed.png"), full_page=True)
