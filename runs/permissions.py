"""Who may see and do what: one place for every page, API endpoint and WebSocket.

Levels, each including the ones before it: read (see runs, jobs, logs, artifacts), write
(dispatch, cancel, re-run), admin (settings, secrets, approvals). A user's level on a repository
is the highest of: superuser (admin everywhere), organisation admin (admin on all of it), an
explicit RepositoryRole, and read on a public repository (for everyone, even anonymous).
Private repositories a user cannot read do not exist for them: callers answer 404, not 403.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Q, QuerySet

from runs.models import Membership, Repository, RepositoryRole

READ, WRITE, ADMIN = RepositoryRole.READ, RepositoryRole.WRITE, RepositoryRole.ADMIN
_RANK = {None: 0, READ: 1, WRITE: 2, ADMIN: 3}


def role_for(user: Any, repository: Repository) -> str | None:
    """The user's level on the repository, or None when they may not even see it."""
    if user is not None and user.is_authenticated and user.is_active:
        if user.is_superuser:
            return ADMIN
        if Membership.objects.filter(
            user=user, organisation_id=repository.organisation_id, is_admin=True
        ).exists():
            return ADMIN
        explicit = (
            RepositoryRole.objects.filter(user=user, repository=repository)
            .values_list("role", flat=True)
            .first()
        )
        if explicit is not None:
            return explicit
    return READ if repository.is_public else None


def roles_at_least(level: str) -> list[str]:
    """The repository roles that give `level` or more (for queries over RepositoryRole)."""
    return [role for role in (READ, WRITE, ADMIN) if _RANK[role] >= _RANK.get(level, _RANK[ADMIN])]


def allows(user: Any, repository: Repository, level: str) -> bool:
    return _RANK[role_for(user, repository)] >= _RANK[level]


def can_read(user: Any, repository: Repository) -> bool:
    return allows(user, repository, READ)


def can_write(user: Any, repository: Repository) -> bool:
    return allows(user, repository, WRITE)


def can_admin(user: Any, repository: Repository) -> bool:
    return allows(user, repository, ADMIN)


def visible_repositories(user: Any) -> QuerySet[Repository]:
    """Every repository the user may read, for lists (one query, no per-row checks)."""
    repositories = Repository.objects.select_related("organisation")
    if user is None or not user.is_authenticated or not user.is_active:
        return repositories.filter(is_public=True)
    if user.is_superuser:
        return repositories.all()
    return repositories.filter(
        Q(is_public=True)
        | Q(roles__user=user)
        | Q(organisation__memberships__user=user, organisation__memberships__is_admin=True)
    ).distinct()
