"""Artifacts through a real run: job A uploads, job B (needs A) downloads; identical content is
stored once; a duplicate name fails its step; the zip downloads answer readers only."""

from __future__ import annotations

import io
import zipfile

import pytest
from django.contrib.auth import get_user_model

from runners.executor import LOCAL, RunnerConfig
from runs.execution import execute
from runs.models import Artifact, Blob, RepositoryRole, Step
from runs.states import State
from runs.storage import blob_name

from .conftest import jobs_of, start_run
from .test_execution import log_lines, make_repository

pytestmark = pytest.mark.django_db(transaction=True)

WORKFLOW = """\
on: push
jobs:
  build:
    runs-on: linux
    steps:
      - run: mkdir -p out/sub && echo hello > out/a.txt && echo deep > out/sub/b.txt
      - uses: actions/upload-artifact@v4
        with:
          name: dist
          path: out
      - uses: actions/upload-artifact@v4
        with:
          name: same-files
          path: out/
          retention-days: 3
      - uses: actions/upload-artifact@v4
        continue-on-error: true
        with:
          name: dist
          path: VERSION
  use:
    needs: build
    runs-on: linux
    steps:
      - uses: actions/download-artifact@v4
        with:
          name: dist
          path: got
      - run: cat got/a.txt got/sub/b.txt
      - uses: actions/download-artifact@v4
        with:
          path: all
      - run: ls all | sort | tr '\\n' ' '
"""


@pytest.fixture
def finished_run(repository, tmp_path, blob_dir):
    sha = make_repository(tmp_path / "repo")
    repository.clone_url = str(tmp_path / "repo")
    repository.save()
    run = start_run(repository, WORKFLOW, sha=sha)
    config = RunnerConfig(executor=LOCAL, work_dir=tmp_path / "work", grace_seconds=1.0)
    for key in ("build", "use"):
        assert execute(jobs_of(run)[key].id, worker="w1", config=config) == State.SUCCESS
    run.refresh_from_db()
    return run


def test_a_later_job_downloads_what_an_earlier_one_uploaded(finished_run, blob_dir):
    jobs = jobs_of(finished_run)
    assert finished_run.state == State.SUCCESS
    use_log = log_lines(jobs["use"])
    assert "hello" in use_log and "deep" in use_log
    assert "dist same-files " in use_log
    assert any("Downloaded artifact 'dist': 2 file(s), 11 bytes" in line for line in use_log)
    build_log = log_lines(jobs["build"])
    assert any("Uploaded artifact 'dist': 2 file(s), 11 bytes" in line for line in build_log)

    artifacts = {a.name: a for a in Artifact.objects.filter(run=finished_run)}
    assert set(artifacts) == {"dist", "same-files"}
    dist = artifacts["dist"]
    assert (dist.size, dist.file_count, dist.job_id) == (11, 2, jobs["build"].id)
    assert round((dist.expires_at - dist.created_at).total_seconds() / 86400) == 30
    kept = artifacts["same-files"]
    assert round((kept.expires_at - kept.created_at).total_seconds() / 86400) == 3
    # The same files make the same archive: one blob, one stored file.
    assert Blob.objects.count() == 1
    assert dist.blob_id == kept.blob_id
    stored = [p for p in blob_dir.rglob("*") if p.is_file()]
    assert [p.relative_to(blob_dir).as_posix() for p in stored] == [blob_name(dist.blob.sha256)]


def test_a_second_upload_of_a_name_fails_its_step_clearly(finished_run):
    step = Step.objects.get(job=jobs_of(finished_run)["build"], index=3)
    assert step.outcome == State.FAILURE
    assert "an artifact named 'dist' was already uploaded in this run by job 'build'" in step.error
    # The first upload stands.
    assert Artifact.objects.get(run=finished_run, name="dist").file_count == 2


def zip_names(response) -> dict[str, bytes]:
    assert response.status_code == 200, response.content[:300]
    assert response["Content-Type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content))) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def test_the_run_page_lists_them_and_the_zips_answer_readers_only(finished_run, client):
    users = get_user_model().objects
    reader, outsider = users.create_user("rita"), users.create_user("otto")
    RepositoryRole.objects.create(user=reader, repository=finished_run.repository, role="read")
    dist = Artifact.objects.get(run=finished_run, name="dist")
    page = f"/acme/widgets/runs/{finished_run.number}/"
    api_zip = f"/api/v1/artifacts/{dist.id}/zip"

    client.force_login(reader)
    html = client.get(page).content.decode()
    assert f'href="{page}artifacts/dist.zip"' in html
    assert "same-files" in html
    expected = {"a.txt": b"hello\n", "sub/b.txt": b"deep\n"}
    assert zip_names(client.get(f"{page}artifacts/dist.zip")) == expected
    assert zip_names(client.get(api_zip)) == expected
    listed = client.get(f"/api/v1/runs/{finished_run.id}/artifacts").json()["artifacts"]
    assert [(a["name"], a["size"], a["file_count"]) for a in listed] == [
        ("dist", 11, 2),
        ("same-files", 11, 2),
    ]
    assert listed[0]["download_url"] == api_zip
    assert client.get(f"{page}artifacts/nothing.zip").status_code == 404

    client.force_login(outsider)
    assert client.get(f"{page}artifacts/dist.zip").status_code == 404
    assert client.get(api_zip).status_code == 404
    assert client.get(f"/api/v1/runs/{finished_run.id}/artifacts").status_code == 404


def test_an_expired_artifact_is_listed_but_not_served(finished_run, client):
    from datetime import timedelta

    from django.utils import timezone

    Artifact.objects.filter(name="dist").update(expires_at=timezone.now() - timedelta(seconds=1))
    dist = Artifact.objects.get(name="dist")
    client.force_login(get_user_model().objects.create_superuser("root", password="x"))
    listed = client.get(f"/api/v1/runs/{finished_run.id}/artifacts").json()["artifacts"]
    assert (listed[0]["expired"], listed[0]["download_url"]) == (True, None)
    assert client.get(f"/api/v1/artifacts/{dist.id}/zip").status_code == 410
    page = f"/acme/widgets/runs/{finished_run.number}/"
    assert client.get(f"{page}artifacts/dist.zip").status_code == 404
    assert "(expired)" in client.get(page).content.decode()


def test_the_size_cap_setting_fails_a_larger_upload(repository, tmp_path, blob_dir, settings):
    settings.CICD_ARTIFACT_MAX_MB = 10 / (1024 * 1024)  # ten bytes
    sha = make_repository(tmp_path / "repo")
    repository.clone_url = str(tmp_path / "repo")
    repository.save()
    source = WORKFLOW.split("  use:")[0]
    run = start_run(repository, source, sha=sha)
    config = RunnerConfig(executor=LOCAL, work_dir=tmp_path / "work", grace_seconds=1.0)
    job = jobs_of(run)["build"]
    assert execute(job.id, worker="w1", config=config) == State.FAILURE
    step = Step.objects.get(job=job, index=1)
    assert step.error == (
        "artifact 'dist' is 11 bytes (2 files), over the limit of 10 bytes per artifact"
    )
    assert not Artifact.objects.exists() and not Blob.objects.exists()
