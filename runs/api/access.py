"""Loading what a request names, through `runs.permissions`: a private repository the caller
cannot read answers 404 exactly like one that does not exist; a reader asking to change
something answers 403."""

from __future__ import annotations

from runs import permissions
from runs.api.auth import Caller
from runs.api.http import ApiError, not_found, valid_id
from runs.models import Artifact, Job, Repository, Run

_LEVELS = (permissions.READ, permissions.WRITE, permissions.ADMIN)
_NEEDS = {
    permissions.WRITE: "the write role (trigger, cancel, re-run)",
    permissions.ADMIN: "the admin role",
}


def repository(caller: Caller, organisation: str, slug: str, *, level: str) -> Repository:
    name = f"{organisation[:100]}/{slug[:100]}"
    if "\x00" in name:
        raise not_found(f"repository {name!r}")
    found = (
        Repository.objects.select_related("organisation")
        .filter(organisation__slug=organisation, slug=slug)
        .first()
    )
    if found is None:
        raise not_found(f"repository {name}")
    _check(caller, found, level, f"repository {name}")
    return found


def repository_by_name(caller: Caller, full_name: str, *, level: str) -> Repository:
    organisation, slash, slug = full_name.partition("/")
    if not slash or not organisation or not slug or "/" in slug:
        raise ApiError(
            400,
            "bad query parameters",
            problems=["repository: must be organisation/repository"],
            fields={"repository": "must be organisation/repository"},
        )
    return repository(caller, organisation, slug, level=level)


def run(caller: Caller, run_id: int, *, level: str) -> Run:
    found = (
        Run.objects.select_related("repository__organisation")
        .defer("workflow_source", "event_payload")
        .filter(id=run_id)
        .first()
        if valid_id(run_id)
        else None
    )
    if found is None:
        raise not_found(f"run {run_id}")
    _check(caller, found.repository, level, f"run {run_id}")
    return found


def job(caller: Caller, job_id: int, *, level: str) -> Job:
    found = (
        Job.objects.select_related("run__repository__organisation")
        .defer("run__workflow_source", "run__event_payload")
        .filter(id=job_id)
        .first()
        if valid_id(job_id)
        else None
    )
    if found is None:
        raise not_found(f"job {job_id}")
    _check(caller, found.run.repository, level, f"job {job_id}")
    return found


def artifact(caller: Caller, artifact_id: int, *, level: str) -> Artifact:
    found = (
        Artifact.objects.select_related("run__repository__organisation", "blob")
        .defer("run__workflow_source", "run__event_payload")
        .filter(id=artifact_id)
        .first()
        if valid_id(artifact_id)
        else None
    )
    if found is None:
        raise not_found(f"artifact {artifact_id}")
    _check(caller, found.run.repository, level, f"artifact {artifact_id}")
    return found


def _check(caller: Caller, target: Repository, level: str, what: str) -> None:
    role = permissions.role_for(caller.user, target)
    if role is None:
        raise not_found(what)
    if _LEVELS.index(role) < _LEVELS.index(level):
        raise ApiError(
            403,
            f"{caller.name} may read {target.full_name} but this needs {_NEEDS.get(level, level)}",
        )
