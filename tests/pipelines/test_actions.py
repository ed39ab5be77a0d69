"""parse_action: the model of a composite action's action.yml, and its rules with positions."""

from __future__ import annotations

import textwrap

import pytest

from pipelines import WorkflowError, parse_action
from pipelines.model import ActionInput, ActionOutput, BuiltinAction, LocalAction

FILE = ".github/actions/greet/action.yml"


def parse(text: str):
    return parse_action(textwrap.dedent(text), FILE)


def problems(text: str) -> list[tuple[int, int, str]]:
    with pytest.raises(WorkflowError) as info:
        parse(text)
    assert all(p.file == FILE for p in info.value.problems)
    return [(p.line, p.column, p.message) for p in info.value.problems]


def only_problem(text: str) -> tuple[int, int, str]:
    found = problems(text)
    assert len(found) == 1, found
    return found[0]


GREET = """\
name: Greet
description: Say hello
author: someone
branding: {icon: smile, color: blue}
inputs:
  who:
    description: Whom to greet
    required: true
  greeting:
    description: The word
    default: Hello
  loud:
    required: 'false'
    default: false
  note:
outputs:
  message:
    description: What was said
    value: ${{ steps.say.outputs.text }}
runs:
  using: composite
  steps:
    - id: say
      name: Say it
      if: inputs.who != ''
      run: echo "text=${{ inputs.greeting }} ${{ inputs.who }}" >> "$GITHUB_OUTPUT"
      shell: bash
      env: {LEVEL: 3}
      working-directory: src
      continue-on-error: ${{ inputs.loud == 'true' }}
    - uses: ./.github/actions/other
      with: {x: 1}
    - uses: actions/checkout@v4
      with: {path: sub}
"""


def test_the_model() -> None:
    action = parse(GREET)
    assert action.path == FILE
    assert action.name == "Greet"
    assert action.display_name == "Greet"
    assert action.description == "Say hello"
    assert dict(action.inputs) == {
        "who": ActionInput("who", "Whom to greet", required=True),
        "greeting": ActionInput("greeting", "The word", default="Hello"),
        "loud": ActionInput("loud", "", required=False, default="false"),
        "note": ActionInput("note"),
    }
    assert dict(action.outputs) == {
        "message": ActionOutput("message", "${{ steps.say.outputs.text }}", "What was said")
    }
    say, other, checkout = action.steps
    assert (say.index, say.id, say.name, say.shell) == (0, "say", "Say it", "bash")
    assert say.if_condition == "inputs.who != ''"
    assert dict(say.env) == {"LEVEL": "3"}
    assert say.working_directory == "src"
    assert say.continue_on_error == "${{ inputs.loud == 'true' }}"
    assert other.action == LocalAction("./.github/actions/other")
    assert dict(other.with_args) == {"x": "1"}
    assert checkout.action == BuiltinAction("actions/checkout", "v4")


def test_the_same_text_parses_to_equal_models() -> None:
    assert parse(GREET) == parse(GREET)


def test_minimal_action_and_yaml_1_2_scalars() -> None:
    action = parse(
        """\
        runs:
          using: composite
          steps:
            - run: echo on
              shell: sh
        """
    )
    assert action.name is None
    assert action.display_name == FILE
    assert dict(action.inputs) == {}
    assert action.steps[0].run == "echo on"


# ------------------------------------------------------------------------------- problems


def test_run_step_without_shell_is_an_error_with_its_position() -> None:
    assert only_problem(
        """\
        name: x
        runs:
          using: composite
          steps:
            - run: echo fine
              shell: sh
            - name: no shell
              run: echo hi
        """
    ) == (
        8,
        7,
        "step 2 of the action has 'run' but no 'shell'; each 'run' step of a composite "
        "action must name its shell, e.g. 'shell: bash' (the workflow's defaults do not apply "
        "inside actions)",
    )


@pytest.mark.parametrize("using", ["node20", "docker", "node16"])
def test_using_other_than_composite_says_what_is_supported(using: str) -> None:
    line, column, message = only_problem(
        f"""\
        name: x
        runs:
          using: {using}
          main: index.js
        outputs:
          a: {{description: no value, as in a JavaScript action}}
        """
    )
    assert (line, column) == (3, 10)
    assert message == (
        f"unsupported action type 'using: {using}'; only composite actions "
        "('using: composite', with 'steps') run on this server, not JavaScript (node) or "
        "Docker actions"
    )


def test_missing_runs_and_missing_steps() -> None:
    assert only_problem("name: x\n") == (1, 1, "missing required key 'runs' at the top level")
    assert only_problem("runs:\n  using: composite\n") == (
        1,
        1,
        "missing required key 'steps' in 'runs'",
    )


def test_empty_file() -> None:
    assert only_problem("") == (
        1,
        1,
        "the file is empty; expected an action mapping with 'runs' (using: composite, and its "
        "steps)",
    )


def test_yaml_syntax_error_has_a_position() -> None:
    line, _, message = only_problem("runs:\n  using: composite\n  steps: [\n")
    assert line == 4
    assert "expected" in message or "found" in message


def test_keys_not_allowed_in_composite_steps() -> None:
    found = problems(
        """\
        runs:
          using: composite
          steps:
            - run: sleep 1
              shell: sh
              timeout-minutes: 3
              retry: {max-attempts: 2}
            - run: echo
              shell: sh
              continue-on-eror: true
        """
    )
    assert found == [
        (6, 7, "unknown key 'timeout-minutes' in step 1 of the action"),
        (7, 7, "unknown key 'retry' in step 1 of the action"),
        (
            10,
            7,
            "unknown key 'continue-on-eror' in step 2 of the action "
            "(did you mean 'continue-on-error'?)",
        ),
    ]


def test_step_rules_shared_with_workflows() -> None:
    found = problems(
        """\
        runs:
          using: composite
          steps:
            - id: a
              run: echo
              shell: sh
              uses: actions/checkout@v4
            - id: a
              uses: actions/setup-node@v4
            - id: 9lives
              shell: sh
            - run: echo
              shell: zsh
              with: {x: 1}
            - uses: ../outside
            - uses: actions/cache@v4
              with: {key: k}
        """
    )
    assert found == [
        (
            4,
            7,
            "step 1 of the action has both 'run' and 'uses'; a step runs a command or uses "
            "an action",
        ),
        (
            8,
            11,
            "duplicate step id 'a' in the action (first used by step 1); step ids must be "
            "unique in an action",
        ),
        (
            9,
            13,
            "unsupported action 'actions/setup-node@v4'; built-in actions are: actions/cache, "
            "actions/checkout, actions/download-artifact, actions/upload-artifact, cicd/deploy, "
            "and local actions (./path)",
        ),
        (10, 7, "step 3 of the action has neither 'run' nor 'uses'; add one of them"),
        (
            10,
            11,
            "invalid step id '9lives': step ids must start with a letter or '_' and contain "
            "only letters, digits, '-' and '_'",
        ),
        (
            13,
            14,
            "'shell' must be one of: bash, sh, pwsh, python, cmd, powershell, got a string ('zsh')",
        ),
        (
            14,
            7,
            "'with' is only used by steps with 'uses'; pass values to 'run' through 'env'",
        ),
        (
            15,
            13,
            "unsupported action '../outside'; built-in actions are: actions/cache, "
            "actions/checkout, actions/download-artifact, actions/upload-artifact, cicd/deploy, "
            "and local actions (./path)",
        ),
        (17, 7, "actions/cache needs the input 'path' (under 'with')"),
    ]


def test_inputs_and_outputs_shapes() -> None:
    found = problems(
        """\
        inputs:
          who: {required: maybe}
          bad name: {description: x}
          n: {default: [1]}
        outputs:
          out: {description: missing value}
          bad name: {value: x}
        runs:
          using: composite
          steps:
            - run: echo
              shell: sh
        """
    )
    assert found == [
        (2, 19, "'required' must be one of: true, false, got a string ('maybe')"),
        (
            3,
            3,
            "invalid input id 'bad name': input ids must start with a letter or '_' and "
            "contain only letters, digits, '-' and '_'",
        ),
        (4, 16, "'default' must be a string, got a list"),
        (6, 3, "missing required key 'value' in output 'out' of the action"),
        (
            7,
            3,
            "invalid output id 'bad name': output ids must start with a letter or '_' and "
            "contain only letters, digits, '-' and '_'",
        ),
    ]


# ------------------------------------------------------------------------------- expressions


def test_expression_contexts_in_an_action() -> None:
    found = problems(
        """\
        inputs:
          who: {default: "${{ github.actor }}"}
          token: {default: "${{ steps.x.outputs.y }}"}
        outputs:
          out: {value: "${{ steps.a.outputs.b }} ${{ secrets.TOKEN }}"}
        runs:
          using: composite
          steps:
            - run: echo ${{ inputs.who }} ${{ needs.build.result }}
              shell: sh
            - if: success() && inputs.whom == 'x'
              run: echo ${{ hashFiles('*.lock') }}
              shell: sh
            - uses: ./x/${{ inputs.who }}
        """
    )
    assert found == [
        (
            3,
            25,
            "the 'steps' context is not available in 'default' of input 'token' of the action; "
            "available here: env, github, job, matrix, runner, strategy, vars",
        ),
        (
            5,
            46,
            "the 'secrets' context is not available in 'value' of output 'out' of the action; "
            "available here: env, github, inputs, job, matrix, runner, steps, strategy, vars",
        ),
        (
            9,
            39,
            "the 'needs' context is not available in 'run' of step 1 of the action; available "
            "here: env, github, inputs, job, matrix, runner, steps, strategy, vars",
        ),
        (
            11,
            31,
            "the action has no input 'whom' (did you mean 'who'?); its inputs are: who, token",
        ),
        (14, 17, "expressions are not supported in 'uses' of step 3 of the action"),
    ]


def test_text_for_people_is_not_checked_for_expressions() -> None:
    action = parse(
        """\
        name: Uses ${{ nothing }}
        description: "Defaults to ${{ github.token }} or ${{ secrets.X }}"
        inputs:
          token: {description: "e.g. ${{ secrets.TOKEN }}", default: "${{ github.token }}"}
        runs:
          using: composite
          steps:
            - run: echo "${{ inputs.TOKEN }}"
              shell: sh
        """
    )
    assert action.inputs["token"].default == "${{ github.token }}"


def test_invalid_expression_position() -> None:
    assert only_problem(
        """\
        runs:
          using: composite
          steps:
            - run: echo ${{ inputs.a == }}
              shell: sh
        """
    )[:2] == (4, 33)
