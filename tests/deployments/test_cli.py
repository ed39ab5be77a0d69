"""The `cicd` commands of environments against a live server: approve, reject, environments,
deployments and rollback. (tests/test_cli_client.py runs the installed command as a process.)"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass

import pytest

from cicd import cli, client
from deployments.models import Deployment
from runs.states import State

from .conftest import jobs_of, waiting_run
from .test_api import deployment

pytestmark = pytest.mark.django_db(transaction=True)


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def as_persona(live_server, api_world):
    """Run a `cicd` client command in this process (as the installed command does, without
    the start-up of a new interpreter) as a persona, against the live server."""

    def run(persona: str, *args: str) -> Result:
        connection = ["--server", live_server.url, "--token", api_world.tokens[persona]]
        out, err = io.StringIO(), io.StringIO()
        try:
            with contextlib.redirect_stderr(err):
                parsed = cli._build_parser().parse_args([*args, *connection])
        except SystemExit as exit:  # argparse's usage errors
            return Result(int(exit.code or 0), "", err.getvalue())
        status = client.main(parsed, out=out, err=err)
        return Result(status, out.getvalue(), err.getvalue())

    return run


def test_approve_reject_and_what_the_environments_show(api_world, as_persona):
    world = api_world
    environment = world.environment(required_approvals=1, reviewers=["reviewer", "second"])
    run, deploy = waiting_run(world)

    refused = as_persona("reader", "approve", str(deploy.id))
    assert refused.returncode == 1
    assert "rita is not a reviewer of environment production" in refused.stderr
    assert "Traceback" not in refused.stderr

    listed = as_persona("reader", "environments", "acme/widgets")
    assert listed.returncode == 0, listed.stderr
    [header, row] = listed.stdout.splitlines()
    assert header.split() == ["ENVIRONMENT", "CURRENT", "RULES", "WAITING", "DEPLOYING", "URL"]
    assert row.split()[:5] == ["production", "-", "1", "approval(s)", "1"]

    approved = as_persona("reviewer", "approve", str(deploy.id), "-m", "ship it")
    assert approved.returncode == 0, approved.stderr
    assert approved.stdout.strip() == (
        f"job {deploy.id} (deploy) at production: approved; the job is queued"
    )
    assert jobs_of(run)["deploy"].state == State.QUEUED

    run, deploy = waiting_run(world)
    no_comment = as_persona("second", "reject", str(deploy.id))
    assert no_comment.returncode == 2 and "-m/--comment" in no_comment.stderr
    rejected = as_persona("second", "reject", str(deploy.id), "-m", "not today")
    assert rejected.returncode == 0, rejected.stderr
    assert "rejected; the job is failure" in rejected.stdout
    assert "rejected by carol: not today" in rejected.stderr

    deployment(environment, 1)
    deployment(environment, 2)
    history = as_persona("reader", "deployments", "acme/widgets", "production")
    assert history.returncode == 0, history.stderr
    lines = history.stdout.splitlines()
    assert lines[0].split()[:4] == ["ID", "STATE", "STRATEGY", "VERSION"]
    assert [line.split()[1] for line in lines[1:]] == ["success", "success"]

    denied = as_persona("reader", "rollback", "acme/widgets", "production")
    assert denied.returncode == 1 and "needs the write role" in denied.stderr
    rolled = as_persona("writer", "rollback", "acme/widgets", "production", "--skip-analysis")
    assert rolled.returncode == 0, rolled.stderr
    queued = Deployment.objects.get(rollback_of__isnull=False)
    assert queued.skip_analysis and queued.triggered_by == "walt"
    assert rolled.stdout.strip() == (
        f"deployment {queued.id}: rolling production back to {queued.image_digest[:19]} "
        f"(the version of deployment #{queued.rollback_of_id}): queued"
    )
    busy = as_persona("writer", "rollback", "acme/widgets", "production")
    assert busy.returncode == 1 and "already queued" in busy.stderr
    usage = as_persona("reader", "environments", "widgets")
    assert usage.returncode == 2 and "organisation/repository" in usage.stderr
