"""Workflow text in, `Workflow` or every problem out.

`parse_workflow` runs three stages and reports the problems of all of them together:

1. `pipelines.yamlload`: YAML with positions (syntax, tabs, duplicate keys, size...). Problems
   here stop the parse: without a document nothing else can be checked.
2. `pipelines.schema`: the shape of every key and value.
3. The semantic checks below: rules that relate values to each other (needs, cycles, actions,
   matrices, cron, expressions, ids). They read the raw document defensively, skipping values
   of the wrong type, which the schema has already reported.

Only a workflow with no problem is turned into the model (`pipelines.model`).

Positions of problems inside expressions: for a plain or quoted scalar on one line, and for
any line of a literal block (`|`), the column is exact: the line of the value that holds the
mistake is found in the file's text. When that line is not in the file verbatim (escapes in a
double-quoted string, a folded `>` or multi-line plain scalar), the problem is placed at the start
of the value.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from croniter import croniter

from pipelines import expressions
from pipelines.errors import ExpressionError, Problem, WorkflowError
from pipelines.matrix import MatrixError, combination_count, expand
from pipelines.model import (
    DEFAULT_TIMEOUT_MINUTES,
    BuiltinAction,
    Concurrency,
    Container,
    Environment,
    FrozenMap,
    Job,
    LocalAction,
    RetryPolicy,
    RunDefaults,
    Service,
    Step,
    Strategy,
    Workflow,
    freeze,
)
from pipelines.schema import (
    describe_value,
    did_you_mean,
    iter_paths,
    schema_problems,
    subject_of,
    where_in,
)
from pipelines.triggers import (
    DispatchInput,
    EventFilter,
    FilterPatternError,
    Triggers,
    validate_pattern,
)
from pipelines.yamlload import (
    DEFAULT_MAX_BYTES,
    Document,
    Path,
    YamlFloat,
    YamlInt,
    load_document,
    scalar_text,
)

DEFAULT_MATRIX_CAP = 256

# Job, step, service and input ids: GitHub's rule.
ID_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
ID_RULE = "must start with a letter or '_' and contain only letters, digits, '-' and '_'"

# Built-in actions and the `with` inputs each accepts (GitHub's documented inputs that cicd can
# honour); the second set are the required ones.
# The inputs of `uses: cicd/deploy`, in the order its messages list them (runners.deploy).
DEPLOY_INPUTS = (
    "image",
    "service",
    "replicas",
    "port",
    "listen",
    "strategy",
    "max-surge",
    "canary-steps",
    "step-pause",
    "switch-back",
    "health-path",
    "health-timeout",
    "max-error-rate",
    "max-latency-ms",
    "min-requests",
    "prometheus-url",
    "prometheus-query",
    "prometheus-max",
    "env",
    "docker-host",
    "skip-analysis",
)
BUILTIN_ACTIONS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "actions/checkout": (
        frozenset(
            {
                "ref",
                "path",
                "fetch-depth",
                "clean",
                "token",
                "repository",
                "submodules",
                "lfs",
                "persist-credentials",
            }
        ),
        frozenset(),
    ),
    "actions/cache": (
        frozenset(
            {
                "key",
                "path",
                "restore-keys",
                "enableCrossOsArchive",
                "fail-on-cache-miss",
                "lookup-only",
                "save-always",
            }
        ),
        frozenset({"key", "path"}),
    ),
    "actions/upload-artifact": (
        frozenset(
            {
                "name",
                "path",
                "if-no-files-found",
                "retention-days",
                "compression-level",
                "overwrite",
                "include-hidden-files",
            }
        ),
        frozenset({"path"}),
    ),
    "actions/download-artifact": (
        frozenset(
            {"name", "path", "pattern", "merge-multiple", "run-id", "github-token", "repository"}
        ),
        frozenset(),
    ),
    # cicd's own deployment action (runners.deploy), documented in the README.
    "cicd/deploy": (frozenset(DEPLOY_INPUTS), frozenset({"image"})),
}
_BUILTIN_LIST = ", ".join(sorted(BUILTIN_ACTIONS))

CONTEXTS = frozenset(
    {
        "github",
        "env",
        "vars",
        "secrets",
        "matrix",
        "needs",
        "steps",
        "job",
        "runner",
        "inputs",
        "strategy",
    }
)
_STATUS_FUNCTIONS = frozenset({"success", "failure", "always", "cancelled"})
_FILTER_KEYS = ("branches", "branches-ignore", "tags", "tags-ignore", "paths", "paths-ignore")
_CRON_FIELDS = "minute hour day-of-month month day-of-week"
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_DAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
# The five cron fields: name, lowest and highest number, and the names allowed instead.
_CRON_RANGES: tuple[tuple[str, int, int, tuple[str, ...]], ...] = (
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day-of-month", 1, 31, ()),
    ("month", 1, 12, _MONTHS),
    ("day-of-week", 0, 7, _DAYS),
)


def parse_workflow(
    text: str,
    path: str,
    *,
    matrix_cap: int = DEFAULT_MATRIX_CAP,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Workflow:
    """Parse and validate the workflow file `path` whose content is `text`.

    Raises `WorkflowError` listing every problem of the file, each with line and column.
    """
    document = load_document(text, path, max_bytes=max_bytes, keep_going=True)
    checks = _SemanticChecks(document, path, matrix_cap=matrix_cap)
    raise_problems(document, schema_problems(document, path) + checks.run())
    return _ModelBuilder(document.value, path, checks.combinations).workflow()


def raise_problems(document: Document, later: list[Problem]) -> None:
    """Raise `WorkflowError` with the YAML problems of `document` and the `later` ones found by
    the schema and the semantic checks, if there is any problem at all."""
    # A YAML problem (a key that is a number...) is the cause of anything else found at its
    # position, so only the YAML problem is reported there.
    yaml_positions = {(problem.line, problem.column) for problem in document.problems}
    later = [problem for problem in later if (problem.line, problem.column) not in yaml_positions]
    problems = document.problems + later
    if problems:
        raise WorkflowError(_without_duplicates(problems))


def _without_duplicates(problems: list[Problem]) -> list[Problem]:
    return list(dict.fromkeys(problems))


# ---------------------------------------------------------------------------------------------
# Reading the raw document defensively


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _sequence(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _string_entries(value: Any, path: Path) -> Iterator[tuple[Path, str]]:
    """(path, text) of a value that may be one string or a list of strings."""
    if isinstance(value, str):
        yield path, value
    for index, item in enumerate(_sequence(value)):
        if isinstance(item, str | int | float) and not isinstance(item, bool):
            yield (*path, index), scalar_text(item)


def _job_needs(job: Any) -> list[tuple[Path, str]]:
    """(path relative to the job, job id) of each valid entry of a job's `needs`."""
    needs = _mapping(job).get("needs")
    if isinstance(needs, str):
        return [(("needs",), needs)]
    return [
        (("needs", index), item)
        for index, item in enumerate(_sequence(needs))
        if isinstance(item, str)
    ]


# ---------------------------------------------------------------------------------------------
# Semantic checks


class DocumentChecks:
    """Rules shared by workflow files and action files (`pipelines.actions`): where a problem
    goes in the file, the rules of a list of steps, and the checks of expressions.

    Subclasses say where expressions are checked and which contexts they may read there, by
    overriding the hooks in the "expression rules" section.
    """

    def __init__(self, document: Document, file: str) -> None:
        self.document = document
        self.file = file
        self.problems: list[Problem] = []

    # -- placing problems

    def _on_key(self, path: Path, message: str) -> None:
        line, column = self.document.key_position(path)
        self.problems.append(Problem(self.file, line, column, message))

    def _on_value(self, path: Path, message: str) -> None:
        line, column = self.document.value_position(path)
        self.problems.append(Problem(self.file, line, column, message))

    def _inside_value(self, path: Path, offset: int, message: str) -> None:
        line, column = _locate_in_scalar(self.document, path, offset)
        self.problems.append(Problem(self.file, line, column, message))

    # -- steps

    def _check_step_list(self, steps: list[Any], path: Path, owner: str, unit: str) -> None:
        """The steps at `path` of `owner` ("job 'build'"); their ids are unique in `unit`."""
        first_use_of_id: dict[str, int] = {}
        for index, step in enumerate(steps):
            if not isinstance(step, dict):
                continue
            step_path = (*path, index)
            step_id = step.get("id")
            if isinstance(step_id, str):
                self._check_step_id(step_id, index, first_use_of_id, step_path, owner, unit)
            self._check_step_kind(step, step_path)

    def _check_step_id(
        self,
        step_id: str,
        index: int,
        first_use: dict[str, int],
        path: Path,
        owner: str,
        unit: str,
    ) -> None:
        if not ID_PATTERN.match(step_id):
            self._on_value((*path, "id"), f"invalid step id '{step_id}': step ids {ID_RULE}")
        elif step_id in first_use:
            self._on_value(
                (*path, "id"),
                f"duplicate step id '{step_id}' in {owner} (first used by step "
                f"{first_use[step_id] + 1}); step ids must be unique in {unit}",
            )
        else:
            first_use[step_id] = index

    def _check_step_kind(self, step: dict[str, Any], path: Path) -> None:
        has_run, has_uses = "run" in step, "uses" in step
        subject = subject_of(path)
        if has_run and has_uses:
            self._on_value(
                path,
                f"{subject} has both 'run' and 'uses'; a step runs a command or uses an action",
            )
        elif not has_run and not has_uses:
            self._on_value(path, f"{subject} has neither 'run' nor 'uses'; add one of them")
        if has_run and not has_uses and "with" in step:
            self._on_key(
                (*path, "with"),
                "'with' is only used by steps with 'uses'; pass values to 'run' through 'env'",
            )
        uses = step.get("uses")
        if isinstance(uses, str):
            self._check_uses(uses, step, path)

    def _check_uses(self, uses: str, step: dict[str, Any], path: Path) -> None:
        if "${{" in uses:
            return  # the expression checks say that 'uses' takes no expressions
        action = parse_uses(uses)
        if isinstance(action, str):
            self._on_value((*path, "uses"), action)
            return
        if isinstance(action, BuiltinAction):
            self._check_action_inputs(action, step, path)

    def _check_action_inputs(self, action: BuiltinAction, step: dict[str, Any], path: Path) -> None:
        accepted, required = BUILTIN_ACTIONS[action.name]
        with_args = step.get("with")
        if with_args is not None and not isinstance(with_args, dict):
            return
        given = _mapping(with_args)
        for name in given:
            if name not in accepted:
                self._on_key(
                    (*path, "with", name),
                    f"unknown input '{name}' for {action.name}"
                    f"{did_you_mean(name, sorted(accepted))}; "
                    f"accepted inputs: {', '.join(sorted(accepted, key=str.lower))}",
                )
        missing = sorted(required - set(given))
        if missing:
            names = " and ".join(f"'{name}'" for name in missing)
            noun = "input" if len(missing) == 1 else "inputs"
            message = f"{action.name} needs the {noun} {names} (under 'with')"
            if "with" in step:
                self._on_key((*path, "with"), message)
            else:
                self._on_value((*path, "uses"), message)

    # -- expressions

    def _check_expressions(self) -> None:
        for path, value in iter_paths(self.document.value):
            if not isinstance(value, str) or not self._expressions_checked_at(path):
                continue
            if self._is_condition(path):
                self._check_condition(path, value)
            elif "${{" in value:
                self._check_templates(path, value)

    def _check_condition(self, path: Path, condition: str) -> None:
        try:
            tree = expressions.parse_condition(condition)
        except ExpressionError as error:
            self._inside_value(path, error.position, f"invalid expression: {error.message}")
            return
        self._check_tree(path, tree, 0, in_condition=True)

    def _check_templates(self, path: Path, value: str) -> None:
        try:
            templates = expressions.find_templates(value)
        except ExpressionError as error:
            self._inside_value(path, error.position, f"invalid expression: {error.message}")
            return
        if templates and self._allowed_contexts(path) is None:
            message = f"expressions are not supported {where_in(path)}"
            self._inside_value(path, templates[0].start, message)
            return
        for template in templates:
            inner_offset = template.start + 3  # positions in the tree count from after `${{`
            try:
                tree = expressions.parse(template.source)
            except ExpressionError as error:
                message = f"invalid expression: {error.message}"
                self._inside_value(path, inner_offset + error.position, message)
                continue
            self._check_tree(path, tree, inner_offset, in_condition=False)

    def _check_tree(
        self, path: Path, tree: expressions.Expr, offset: int, *, in_condition: bool
    ) -> None:
        allowed = self._allowed_contexts(path) or frozenset()
        for node in _walk(tree):
            if isinstance(node, expressions.ContextRef):
                self._check_context(path, node, offset, allowed)
            elif isinstance(node, expressions.PropertyAccess):
                self._check_reference(path, node, offset)
            elif isinstance(node, expressions.FunctionCall) and node.name == "hashFiles":
                self._check_hash_files(path, node, offset)
        if not in_condition and expressions.uses_status_function(tree):
            first = min(
                node.position
                for node in _walk(tree)
                if isinstance(node, expressions.FunctionCall) and node.name in _STATUS_FUNCTIONS
            )
            message = (
                "the status functions success(), failure(), always() and cancelled() "
                "can only be used in 'if' conditions"
            )
            self._inside_value(path, offset + first, message)

    def _check_hash_files(self, path: Path, node: expressions.FunctionCall, offset: int) -> None:
        """hashFiles() reads the job's workspace, which only exists while its steps run."""
        if self._reads_workspace(path):
            return
        self._inside_value(
            path,
            offset + node.position,
            f"hashFiles() is only available in steps (it reads the job's files), "
            f"not {where_in(path)}",
        )

    def _check_context(
        self, path: Path, node: expressions.ContextRef, offset: int, allowed: frozenset[str]
    ) -> None:
        name = node.name.lower()
        available = ", ".join(sorted(allowed))
        if name not in CONTEXTS:
            message = f"unknown context '{node.name}'; available here: {available}"
        elif name not in allowed:
            message = (
                f"the '{name}' context is not available {where_in(path)}; "
                f"available here: {available}"
            )
        else:
            return
        self._inside_value(path, offset + node.position, message)

    # -- expression rules (hooks)

    def _expressions_checked_at(self, path: Path) -> bool:
        """Whether the strings at `path` are checked for expressions at all."""
        return True

    def _allowed_contexts(self, path: Path) -> frozenset[str] | None:
        """The contexts an expression at `path` may read; None: no expressions there."""
        return allowed_contexts(path)

    def _is_condition(self, path: Path) -> bool:
        """Whether `path` is an `if:` (a whole expression without `${{ }}`)."""
        return _is_condition_path(path)

    def _reads_workspace(self, path: Path) -> bool:
        """Whether an expression at `path` runs while the steps do (so hashFiles() works)."""
        return _path_matches(("jobs", "*", "steps", "**"), path)

    def _check_reference(self, path: Path, node: expressions.PropertyAccess, offset: int) -> None:
        """A hook for rules about property accesses (`needs.x` in workflows)."""


class _SemanticChecks(DocumentChecks):
    """The rules of workflows that the schema cannot express. `run()` returns their problems."""

    def __init__(self, document: Document, file: str, *, matrix_cap: int) -> None:
        super().__init__(document, file)
        self.matrix_cap = matrix_cap
        self.workflow = document.value
        self.jobs = _mapping(self.workflow.get("jobs"))
        # Expanded matrices of the jobs whose matrix is known before run time.
        self.combinations: dict[str, list[dict[str, Any]]] = {}

    def run(self) -> list[Problem]:
        self._check_triggers()
        self._check_jobs()
        self._check_needs()
        self._check_expressions()
        return self.problems

    # -- on:

    def _check_triggers(self) -> None:
        on = self.workflow.get("on")
        for path, event in _string_entries(on, ("on",)):
            if event == "schedule":
                self._on_value(
                    path,
                    "'schedule' needs its cron entries: write "
                    "'on: {schedule: [{cron: \"0 3 * * *\"}]}' (or the block form)",
                )
        events = _mapping(on)
        for event in ("push", "pull_request"):
            self._check_event_filter(_mapping(events.get(event)), ("on", event))
        dispatch = _mapping(events.get("workflow_dispatch"))
        for name, spec in _mapping(dispatch.get("inputs")).items():
            self._check_dispatch_input(
                name, _mapping(spec), ("on", "workflow_dispatch", "inputs", name)
            )
        for index, entry in enumerate(_sequence(events.get("schedule"))):
            cron = _mapping(entry).get("cron")
            if isinstance(cron, str):
                reason = cron_problem(cron)
                if reason:
                    self._on_value(("on", "schedule", index, "cron"), reason)

    def _check_event_filter(self, event_filter: dict[str, Any], path: Path) -> None:
        for include, ignore in (
            ("branches", "branches-ignore"),
            ("tags", "tags-ignore"),
            ("paths", "paths-ignore"),
        ):
            if include in event_filter and ignore in event_filter:
                self._on_key(
                    (*path, ignore),
                    f"'{include}' and '{ignore}' cannot both be used for the same event; "
                    f"use '!' patterns in '{include}' instead",
                )
        for key in _FILTER_KEYS:
            for entry_path, pattern in _string_entries(event_filter.get(key), (*path, key)):
                try:
                    validate_pattern(pattern)
                except FilterPatternError as error:
                    self._on_value(entry_path, f"invalid pattern {pattern!r} in '{key}': {error}")

    def _check_dispatch_input(self, name: str, spec: dict[str, Any], path: Path) -> None:
        if not ID_PATTERN.match(name):
            self._on_key(path, f"invalid input name '{name}': input names {ID_RULE}")
        kind = spec.get("type", "string")
        default = spec.get("default")
        options = spec.get("options")
        if kind == "choice":
            self._check_choice_input(name, spec, path)
        elif "options" in spec and options is not None:
            self._on_key(
                (*path, "options"),
                f"'options' is only used by inputs of type choice; input '{name}' is a {kind}",
            )
        if "default" not in spec or default is None:
            return
        got = describe_value(default)
        if kind == "boolean" and not isinstance(default, bool):
            message = f"the default of boolean input '{name}' must be true or false, got {got}"
            self._on_value((*path, "default"), message)
        if kind == "number" and (isinstance(default, bool) or not isinstance(default, int | float)):
            message = f"the default of number input '{name}' must be a number, got {got}"
            self._on_value((*path, "default"), message)

    def _check_choice_input(self, name: str, spec: dict[str, Any], path: Path) -> None:
        options = spec.get("options")
        if not isinstance(options, list) or not options:
            if options is None or isinstance(options, list):
                self._on_key(
                    path, f"input '{name}' of type choice needs a non-empty 'options' list"
                )
            return
        texts = [scalar_text(option) for option in options]
        if "default" in spec and spec["default"] is not None:
            default = scalar_text(spec["default"])
            if default not in texts:
                message = (
                    f"the default {default!r} of input '{name}' is not one of its options: "
                    + ", ".join(texts)
                )
                self._on_value((*path, "default"), message)

    # -- jobs:

    def _check_jobs(self) -> None:
        for job_id, job in self.jobs.items():
            path = ("jobs", job_id)
            if not ID_PATTERN.match(job_id):
                self._on_key(path, f"invalid job id '{job_id}': job ids {ID_RULE}")
            if not isinstance(job, dict):
                continue
            for service_id in _mapping(job.get("services")):
                if not ID_PATTERN.match(service_id):
                    self._on_key(
                        (*path, "services", service_id),
                        f"invalid service id '{service_id}': service ids {ID_RULE}",
                    )
            self._check_matrix(job_id, job)
            self._check_step_list(
                _sequence(job.get("steps")), (*path, "steps"), f"job '{job_id}'", "a job"
            )

    def _check_matrix(self, job_id: str, job: dict[str, Any]) -> None:
        matrix = _mapping(job.get("strategy")).get("matrix")
        if not isinstance(matrix, dict) or not _matrix_is_literal(matrix):
            return  # an expression (expanded at run time), or a shape the schema reported
        path = ("jobs", job_id, "strategy", "matrix")
        plain = matrix_values(matrix)
        try:
            count = combination_count(plain)
            if count > self.matrix_cap:
                self._on_value(
                    path,
                    f"matrix of job '{job_id}' expands to {count} combinations, "
                    f"more than the limit of {self.matrix_cap}",
                )
                return
            self.combinations[job_id] = expand(plain)
        except MatrixError as error:
            self._on_value(path, f"invalid matrix in job '{job_id}': {error}")

    # -- needs

    def _check_needs(self) -> None:
        order = list(self.jobs)
        graph: dict[str, list[str]] = {}
        for job_id, job in self.jobs.items():
            graph[job_id] = []
            for relative, needed in _job_needs(job):
                if needed in self.jobs:
                    graph[job_id].append(needed)
                    continue
                self._on_value(
                    ("jobs", job_id, *relative),
                    f"job '{job_id}' needs '{needed}', which is not a job in this workflow"
                    f"{did_you_mean(needed, order)}",
                )
        for cycle in find_cycles(graph, order):
            self._on_value(
                self._needs_entry_path(cycle[0], cycle[1]), "needs cycle: " + " -> ".join(cycle)
            )

    def _needs_entry_path(self, job_id: str, needed: str) -> Path:
        for relative, name in _job_needs(self.jobs[job_id]):
            if name == needed:
                return ("jobs", job_id, *relative)
        return ("jobs", job_id, "needs")

    def _check_reference(self, path: Path, node: expressions.PropertyAccess, offset: int) -> None:
        """`needs.build.outputs.x` in a job that does not need `build` is always empty."""
        target = node.target
        if not (isinstance(target, expressions.ContextRef) and target.name.lower() == "needs"):
            return
        if len(path) < 2 or path[0] != "jobs" or path[1] not in self.jobs:
            return
        job_id = path[1]
        needed = {name for _, name in _job_needs(self.jobs[job_id])}
        if node.name not in needed and node.name in self.jobs:
            self._inside_value(
                path,
                offset + node.position,
                f"job '{job_id}' reads needs.{node.name} but does not need '{node.name}'; "
                f"add it to the job's 'needs'",
            )


def _walk(tree: expressions.Expr) -> Iterator[expressions.Expr]:
    pending = [tree]
    while pending:
        node = pending.pop()
        yield node
        pending.extend(node.children())


def _is_condition_path(path: Path) -> bool:
    return (len(path) == 3 and path[0] == "jobs" and path[2] == "if") or (
        len(path) == 5 and path[0] == "jobs" and path[2] == "steps" and path[4] == "if"
    )


def _matrix_is_literal(matrix: dict[str, Any]) -> bool:
    """Can the matrix be expanded now? Not if it holds expressions, or a part the schema
    reported (an axis that is not a list, include/exclude that are not lists of mappings)."""
    for key, value in matrix.items():
        if key in ("include", "exclude"):
            if not isinstance(value, list) or not all(isinstance(e, dict) for e in value):
                return False
        elif not isinstance(value, list):
            return False
    return True


def matrix_values(value: Any) -> Any:
    """The matrix with numbers as written where YAML would change them (`3.10` -> "3.10").

    Floats always become their text (a version list is the usual case); integers stay numbers
    unless their text differs from the number (`010`, `0x1F`).
    """
    if isinstance(value, dict):
        return {key: matrix_values(item) for key, item in value.items()}
    if isinstance(value, list):
        return [matrix_values(item) for item in value]
    if isinstance(value, YamlFloat):
        return value.text
    if isinstance(value, YamlInt):
        return int(value) if str(int(value)) == value.text else value.text
    return value


# ---------------------------------------------------------------------------------------------
# Single rules, usable on their own


def parse_uses(uses: str) -> BuiltinAction | LocalAction | str:
    """The action a step's `uses` names, or the problem with it (a message)."""
    unsupported = (
        f"unsupported action '{uses}'; built-in actions are: {_BUILTIN_LIST}, "
        "and local actions (./path)"
    )
    if uses.startswith("./"):
        if ".." in uses.split("/"):
            return f"local action '{uses}' must stay inside the repository (no '..')"
        return LocalAction(uses)
    name, _, ref = uses.partition("@")
    if name.lower() not in BUILTIN_ACTIONS:
        return unsupported
    if not ref.strip():
        return f"action '{uses}' needs a version after '@', e.g. '{name}@v4'"
    return BuiltinAction(name.lower(), ref)


def cron_problem(expression: str) -> str | None:
    """Why a `schedule` cron expression is invalid, or None when it is valid.

    GitHub takes POSIX cron: five fields of numbers, ranges, lists and steps, with month and day
    names; croniter's extensions (`@daily`, `L`, `#`, seconds) are refused.
    """
    fields = expression.split()
    if len(fields) != 5:
        reason = f"it has {len(fields)} field{'s' if len(fields) != 1 else ''}"
    else:
        reason = next(
            (
                problem
                for text, spec in zip(fields, _CRON_RANGES, strict=True)
                if (problem := _cron_field_problem(text, *spec))
            ),
            None,
        ) or _croniter_problem(expression)
    if reason is None:
        return None
    return f"invalid cron {expression!r}: {reason}; expected five fields: {_CRON_FIELDS}"


def _cron_field_problem(
    text: str, name: str, lowest: int, highest: int, names: tuple[str, ...]
) -> str | None:
    for item in text.split(","):
        base, slash, step = item.partition("/")
        if slash and not (step.isdigit() and int(step) > 0):
            return f"{name} '{item}' has an invalid step '{step}'"
        if base == "*":
            continue
        for bound in base.split("-", 1):
            if bound.upper() in names:
                continue
            if not bound.isdigit():
                spelled = f" or a name ({names[0]}-{names[-1]})" if names else ""
                return f"{name} '{bound}' is not a number ({lowest}-{highest}){spelled}"
            if not lowest <= int(bound) <= highest:
                return f"{name} {bound} is out of range {lowest}-{highest}"
    return None


def _croniter_problem(expression: str) -> str | None:
    try:
        croniter(expression)
    except Exception as error:  # croniter raises assorted types on bad input; all mean "invalid"
        return re.sub(r"^\[.*?\]\s*", "", str(error)) or "not a valid expression"
    return None


def find_cycles(graph: dict[str, list[str]], order: list[str]) -> list[list[str]]:
    """The `needs` cycles of a job graph, one per cycle found, each as a closed path.

    Each cycle starts (and ends) with its member that comes first in file order and follows the
    `needs` edges: ["build", "test", "build"] means build needs test and test needs build.
    """
    blocked = _jobs_that_cannot_start(graph, order)
    position = {job: index for index, job in enumerate(order)}
    handled: set[str] = set()
    cycles = []
    for start in order:
        if start not in blocked or start in handled:
            continue
        walk: list[str] = []
        seen_at: dict[str, int] = {}
        current = start
        while current not in seen_at and current not in handled:
            seen_at[current] = len(walk)
            walk.append(current)
            current = next(n for n in graph[current] if n in blocked)
        if current in seen_at:
            cycle = walk[seen_at[current] :]
            first = min(range(len(cycle)), key=lambda i: position[cycle[i]])
            cycle = cycle[first:] + cycle[:first]
            cycles.append([*cycle, cycle[0]])
        handled.update(walk)
    return cycles


def _jobs_that_cannot_start(graph: dict[str, list[str]], order: list[str]) -> set[str]:
    """Jobs left once every job whose needs can all finish is removed: the members of cycles
    and the jobs that (transitively) need them. Each of them needs another one of them."""
    remaining = set(order)
    changed = True
    while changed:
        changed = False
        for job in order:
            if job in remaining and not any(n in remaining for n in graph[job]):
                remaining.discard(job)
                changed = True
    return remaining


# Which contexts an expression may read, by where it is written (GitHub's "Context availability"
# table). The first pattern that matches wins; '*' is one path element, '**' any number of them.
# None means expressions are not supported there at all.
_JOB = frozenset({"github", "needs", "strategy", "matrix", "vars", "inputs"})
_JOB_RUNTIME = _JOB | {"job", "runner", "env", "secrets"}
_STEP_IF = _JOB | {"job", "runner", "env", "steps"}
_STEP = _STEP_IF | {"secrets"}
_WORKFLOW = frozenset({"github", "inputs", "vars"})
_CONTEXT_RULES: tuple[tuple[tuple[str, ...], frozenset[str] | None], ...] = (
    (("on", "**"), None),
    (("permissions", "**"), None),
    (("env", "*"), _WORKFLOW | {"secrets"}),
    (("jobs", "*", "needs", "**"), None),
    (("jobs", "*", "permissions", "**"), None),
    (("jobs", "*", "retry", "**"), None),
    (("jobs", "*", "if"), frozenset({"github", "needs", "vars", "inputs"})),
    (("jobs", "*", "strategy", "**"), frozenset({"github", "needs", "vars", "inputs"})),
    (("jobs", "*", "env", "*"), _JOB | {"secrets"}),
    (("jobs", "*", "defaults", "**"), _JOB | {"env"}),
    (("jobs", "*", "environment", "url"), _STEP_IF),
    (("jobs", "*", "container", "credentials", "**"), _JOB | {"env", "secrets"}),
    (("jobs", "*", "container", "env", "*"), _JOB_RUNTIME),
    (("jobs", "*", "services", "*", "credentials", "**"), _JOB | {"env", "secrets"}),
    (("jobs", "*", "services", "*", "env", "*"), _JOB_RUNTIME),
    (("jobs", "*", "outputs", "*"), _JOB_RUNTIME | {"steps"}),
    (("jobs", "*", "steps", "*", "uses"), None),
    (("jobs", "*", "steps", "*", "id"), None),
    (("jobs", "*", "steps", "*", "retry", "**"), None),
    (("jobs", "*", "steps", "*", "if"), _STEP_IF),
    (("jobs", "*", "steps", "**"), _STEP),
    (("jobs", "**"), _JOB),
    (("**",), _WORKFLOW),
)


def allowed_contexts(path: Path) -> frozenset[str] | None:
    """The contexts an expression written at `path` may read; None: no expressions there."""
    for pattern, allowed in _CONTEXT_RULES:
        if _path_matches(pattern, path):
            return allowed
    return _WORKFLOW


def _path_matches(pattern: tuple[str, ...], path: Path) -> bool:
    if pattern and pattern[-1] == "**":
        prefix = pattern[:-1]
        return len(path) >= len(prefix) and _path_matches(prefix, path[: len(prefix)])
    return len(pattern) == len(path) and all(
        p in ("*", part) for p, part in zip(pattern, path, strict=True)
    )


def _locate_in_scalar(document: Document, path: Path, offset: int) -> tuple[int, int]:
    """The file position of character `offset` of the string value at `path`.

    The line of the value that holds the offset is looked up in the scalar's source text (its
    n-th occurrence, n counted in the value, so repeated lines of a block map to the right one).
    """
    scalar = document.scalars.get(path)
    value = _value_at(document.value, path)
    if scalar is None or not isinstance(value, str):
        return document.value_position(path)
    offset = max(0, min(offset, len(value)))
    raw = document.source[scalar.start : scalar.end]
    line_start = value.rfind("\n", 0, offset) + 1
    line_end = value.find("\n", offset)
    line_end = len(value) if line_end == -1 else line_end
    for fragment_start, fragment_end in (
        (line_start, line_end),
        (offset, min(line_end, offset + 24)),
    ):
        fragment = value[fragment_start:fragment_end]
        if not fragment:
            continue
        found = _nth_find(raw, fragment, value[:fragment_start].count(fragment))
        if found != -1:
            return document.offset_position(scalar.start + found + offset - fragment_start)
    return document.value_position(path)


def _nth_find(text: str, fragment: str, skip: int) -> int:
    found = text.find(fragment)
    for _ in range(skip):
        if found == -1:
            break
        found = text.find(fragment, found + len(fragment))
    return found


def _value_at(value: Any, path: Path) -> Any:
    for part in path:
        try:
            value = value[part]
        except (KeyError, IndexError, TypeError):
            return None
    return value


# ---------------------------------------------------------------------------------------------
# Building the model from a valid document


def _text_or_none(value: Any) -> str | None:
    return None if value is None else scalar_text(value)


def _texts(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, list):
        return tuple(scalar_text(item) for item in value)
    return (scalar_text(value),)


def _text_map(value: Any) -> FrozenMap[str, str]:
    return FrozenMap((key, scalar_text(item)) for key, item in _mapping(value).items())


def _number(value: Any) -> int | float:
    number = float(value)
    return int(number) if number.is_integer() else number


def _number_or_expression(value: Any, default: Any) -> Any:
    if value is None:
        return default
    return value if isinstance(value, str) else _number(value)


def _flag_or_expression(value: Any, default: bool) -> bool | str:
    if value is None:
        return default
    return value if isinstance(value, str) else bool(value)


def _condition(value: Any) -> str | None:
    return None if value is None else scalar_text(value)


class _ModelBuilder:
    """Turns a validated raw document into `pipelines.model` objects."""

    def __init__(
        self, raw: dict[str, Any], path: str, combinations: dict[str, list[dict[str, Any]]]
    ) -> None:
        self.raw = raw
        self.path = path
        self.combinations = combinations

    def workflow(self) -> Workflow:
        raw = self.raw
        return Workflow(
            path=self.path,
            name=_text_or_none(raw.get("name")),
            run_name=_text_or_none(raw.get("run-name")),
            triggers=build_triggers(raw.get("on")),
            env=_text_map(raw.get("env")),
            defaults=_run_defaults(raw.get("defaults")),
            concurrency=_concurrency(raw.get("concurrency")),
            permissions=_permissions(raw.get("permissions")),
            jobs=FrozenMap((job_id, self._job(job_id, job)) for job_id, job in raw["jobs"].items()),
        )

    def _job(self, job_id: str, raw: dict[str, Any]) -> Job:
        runs_on, group = _runs_on(raw.get("runs-on"))
        return Job(
            id=job_id,
            name=_text_or_none(raw.get("name")),
            needs=_texts(raw.get("needs")),
            if_condition=_condition(raw.get("if")),
            runs_on=runs_on,
            runner_group=group,
            container=_container(raw.get("container")),
            services=FrozenMap(
                (service_id, _service(service_id, spec))
                for service_id, spec in _mapping(raw.get("services")).items()
            ),
            env=_text_map(raw.get("env")),
            defaults=_run_defaults(raw.get("defaults")),
            strategy=self._strategy(job_id, raw.get("strategy")),
            timeout_minutes=_number_or_expression(
                raw.get("timeout-minutes"), DEFAULT_TIMEOUT_MINUTES
            ),
            continue_on_error=_flag_or_expression(raw.get("continue-on-error"), False),
            outputs=_text_map(raw.get("outputs")),
            environment=_environment(raw.get("environment")),
            concurrency=_concurrency(raw.get("concurrency")),
            permissions=_permissions(raw.get("permissions")),
            steps=tuple(build_step(index, step) for index, step in enumerate(raw["steps"])),
            retry=_retry(raw.get("retry")),
        )

    def _strategy(self, job_id: str, raw: Any) -> Strategy | None:
        if raw is None:
            return None
        matrix = raw.get("matrix")
        combinations = self.combinations.get(job_id)
        max_parallel = raw.get("max-parallel")
        return Strategy(
            matrix=matrix if isinstance(matrix, str) else freeze(matrix_values(matrix or {})),
            fail_fast=_flag_or_expression(raw.get("fail-fast"), True),
            max_parallel=None
            if max_parallel is None
            else _number_or_expression(max_parallel, None),
            combinations=None if combinations is None else tuple(freeze(c) for c in combinations),
        )


def build_triggers(raw: Any) -> Triggers:
    """`Triggers` from a valid `on:` value (an event, a list of events, or a mapping)."""
    if isinstance(raw, str):
        raw = [raw]
    if isinstance(raw, list):
        raw = dict.fromkeys(raw)
    events = _mapping(raw)
    dispatch = None
    if "workflow_dispatch" in events:
        inputs = _mapping(_mapping(events["workflow_dispatch"]).get("inputs"))
        dispatch = tuple(_dispatch_input(name, _mapping(spec)) for name, spec in inputs.items())
    return Triggers(
        push=_event_filter(events["push"]) if "push" in events else None,
        pull_request=_event_filter(events["pull_request"]) if "pull_request" in events else None,
        workflow_dispatch=dispatch,
        schedule=tuple(entry["cron"] for entry in _sequence(events.get("schedule"))),
    )


def _event_filter(raw: Any) -> EventFilter:
    spec = _mapping(raw)

    def patterns(key: str) -> tuple[str, ...] | None:
        return _texts(spec[key]) if key in spec and spec[key] is not None else None

    return EventFilter(
        branches=patterns("branches"),
        branches_ignore=patterns("branches-ignore"),
        tags=patterns("tags"),
        tags_ignore=patterns("tags-ignore"),
        paths=patterns("paths"),
        paths_ignore=patterns("paths-ignore"),
        types=patterns("types"),
    )


def _dispatch_input(name: str, spec: dict[str, Any]) -> DispatchInput:
    kind = spec.get("type") or "string"
    default = spec.get("default")
    if kind == "number" and default is not None:
        default = _number(default)
    elif kind != "boolean" and default is not None:
        default = scalar_text(default)
    return DispatchInput(
        name=name,
        type=kind,
        description=scalar_text(spec.get("description")),
        required=bool(spec.get("required", False)),
        default=default,
        options=_texts(spec.get("options")),
    )


def _run_defaults(raw: Any) -> RunDefaults:
    run = _mapping(_mapping(raw).get("run"))
    return RunDefaults(
        shell=_text_or_none(run.get("shell")),
        working_directory=_text_or_none(run.get("working-directory")),
    )


def _concurrency(raw: Any) -> Concurrency | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        return Concurrency(group=scalar_text(raw))
    return Concurrency(
        group=scalar_text(raw["group"]),
        cancel_in_progress=_flag_or_expression(raw.get("cancel-in-progress"), False),
    )


def _permissions(raw: Any) -> str | FrozenMap[str, str] | None:
    if raw is None or isinstance(raw, str):
        return raw
    return _text_map(raw)


def _runs_on(raw: Any) -> tuple[tuple[str, ...], str | None]:
    if isinstance(raw, dict):
        return _texts(raw.get("labels")), _text_or_none(raw.get("group"))
    return _texts(raw), None


def _container(raw: Any) -> Container | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        return Container(image=scalar_text(raw))
    return Container(**_container_fields(raw))


def _service(service_id: str, raw: dict[str, Any]) -> Service:
    return Service(id=service_id, **_container_fields(raw))


def _container_fields(raw: dict[str, Any]) -> dict[str, Any]:
    credentials = raw.get("credentials")
    return {
        "image": scalar_text(raw["image"]),
        "env": _text_map(raw.get("env")),
        "options": _text_or_none(raw.get("options")),
        "ports": _texts(raw.get("ports")),
        "volumes": _texts(raw.get("volumes")),
        "credentials": None if credentials is None else _text_map(credentials),
    }


def _environment(raw: Any) -> Environment | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        return Environment(name=scalar_text(raw))
    return Environment(name=scalar_text(raw["name"]), url=_text_or_none(raw.get("url")))


def _retry(raw: Any) -> RetryPolicy | None:
    if raw is None:
        return None
    defaults = RetryPolicy(max_attempts=1)
    return RetryPolicy(
        max_attempts=int(raw["max-attempts"]),
        backoff_seconds=float(raw.get("backoff-seconds", defaults.backoff_seconds)),
        max_backoff_seconds=float(raw.get("max-backoff-seconds", defaults.max_backoff_seconds)),
    )


def build_step(index: int, raw: dict[str, Any]) -> Step:
    """The model of one valid step (of a job, or of a composite action)."""
    uses = raw.get("uses")
    action = parse_uses(uses) if isinstance(uses, str) else None
    return Step(
        index=index,
        id=raw.get("id"),
        name=_text_or_none(raw.get("name")),
        if_condition=_condition(raw.get("if")),
        run=_text_or_none(raw.get("run")),
        shell=_text_or_none(raw.get("shell")),
        working_directory=_text_or_none(raw.get("working-directory")),
        env=_text_map(raw.get("env")),
        with_args=_text_map(raw.get("with")),
        uses=uses,
        action=action if isinstance(action, BuiltinAction | LocalAction) else None,
        timeout_minutes=_number_or_expression(raw.get("timeout-minutes"), None),
        continue_on_error=_flag_or_expression(raw.get("continue-on-error"), False),
        retry=_retry(raw.get("retry")),
    )
