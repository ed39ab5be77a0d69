"""Status badges: the latest conclusion of a branch or workflow as a small SVG for READMEs.

The SVG is built as text, so every piece of text in it (a workflow name, which the repository's
authors choose) is XML-escaped; nothing else in it comes from outside.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr

from django.db.models import Q

from runs.models import Repository, Run
from runs.states import FINAL_STATES, State

MAX_LABEL_CHARS = 60
# A run that has not started yet says nothing about the code: the badge keeps the last verdict.
SHOWN_STATES = (State.RUNNING, *sorted(FINAL_STATES))

_MESSAGES: dict[str, tuple[str, str]] = {
    State.SUCCESS: ("passing", "#2da44e"),
    State.FAILURE: ("failing", "#cf222e"),
    State.TIMED_OUT: ("failing", "#cf222e"),
    State.CANCELLED: ("cancelled", "#6e7781"),
    State.SKIPPED: ("skipped", "#6e7781"),
    State.RUNNING: ("running", "#bf8700"),
}
NO_RUNS = ("no runs", "#9f9f9f")


@dataclass(frozen=True, slots=True)
class Badge:
    label: str
    message: str
    colour: str

    def svg(self) -> str:
        label, message = self.label, self.message
        label_width, message_width = _text_width(label), _text_width(message)
        width = label_width + message_width
        title = escape(f"{label}: {message}")
        return (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="20" role="img" '
            f"aria-label={quoteattr(f'{label}: {message}')}>"
            f"<title>{title}</title>"
            '<linearGradient id="s" x2="0" y2="100%"><stop offset="0" stop-color="#bbb" '
            'stop-opacity=".1"/><stop offset="1" stop-opacity=".1"/></linearGradient>'
            f'<clipPath id="r"><rect width="{width}" height="20" rx="3" fill="#fff"/></clipPath>'
            f'<g clip-path="url(#r)"><rect width="{label_width}" height="20" fill="#555"/>'
            f'<rect x="{label_width}" width="{message_width}" height="20" '
            f'fill="{self.colour}"/><rect width="{width}" height="20" fill="url(#s)"/></g>'
            '<g fill="#fff" text-anchor="middle" '
            'font-family="Verdana,Geneva,DejaVu Sans,sans-serif" font-size="11">'
            + _shadowed_text(label_width / 2, label)
            + _shadowed_text(label_width + message_width / 2, message)
            + "</g></svg>"
        )

    def etag(self) -> str:
        return '"' + hashlib.sha256(self.svg().encode()).hexdigest()[:32] + '"'


def badge_for(repository: Repository, *, branch: str = "", workflow: str = "") -> Badge:
    """The latest running-or-ended run of the branch (and workflow), as a badge."""
    runs = Run.objects.filter(repository=repository, state__in=SHOWN_STATES)
    if branch:
        runs = runs.filter(ref__in=[f"refs/heads/{branch}", branch])
    if workflow:
        # As written in the README: the file's path, its file name, or the workflow's name.
        runs = runs.filter(
            Q(workflow_path=workflow)
            | Q(workflow_path__endswith=f"/{workflow}")
            | Q(workflow_name=workflow)
        )
    latest = runs.order_by("-number").values("state", "workflow_name").first()
    label = (latest["workflow_name"] if latest and workflow else workflow) or "cicd"
    message, colour = _MESSAGES.get(latest["state"], NO_RUNS) if latest else NO_RUNS
    return Badge(_shortened(label), message, colour)


def _shortened(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_LABEL_CHARS else text[: MAX_LABEL_CHARS - 1] + "…"


def _text_width(text: str) -> int:
    # Verdana 11px is about 7 px a character on average; 10 px of padding on each side.
    return 7 * len(text) + 20


def _shadowed_text(x: float, text: str) -> str:
    shown = escape(text)
    return (
        f'<text x="{x:g}" y="15" fill="#010101" fill-opacity=".3">{shown}</text>'
        f'<text x="{x:g}" y="14">{shown}</text>'
    )
