"""The OpenAPI description: complete (every route, every method), well formed, and true (real
responses validate against the schemas it documents for their status)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.urls import URLPattern
from jsonschema import Draft202012Validator

from runs import api_urls
from runs.openapi import document
from tests.api.builders import add_chunk, execute, jobs_of, start
from tests.api.conftest import call

DOCUMENT = document()
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")

# The shape of an OpenAPI 3.1 document, as far as this API uses it (after the specification's
# own schema, https://spec.openapis.org/oas/3.1/schema/2022-10-07, reduced to what matters).
REF = {"type": "object", "required": ["$ref"], "properties": {"$ref": {"type": "string"}}}
MEDIA = {
    "type": "object",
    "additionalProperties": {
        "type": "object",
        "properties": {"schema": {"type": ["object", "boolean"]}},
        "additionalProperties": False,
    },
}
PARAMETER = {
    "type": "object",
    "required": ["name", "in", "schema"],
    "properties": {
        "name": {"type": "string"},
        "in": {"enum": ["query", "header", "path", "cookie"]},
        "description": {"type": "string"},
        "required": {"type": "boolean"},
        "schema": {"type": "object"},
    },
    "additionalProperties": False,
    "if": {"properties": {"in": {"const": "path"}}},
    "then": {"required": ["required"], "properties": {"required": {"const": True}}},
}
RESPONSE = {
    "type": "object",
    "required": ["description"],
    "properties": {"description": {"type": "string"}, "content": MEDIA},
    "additionalProperties": False,
}
OPERATION = {
    "type": "object",
    "required": ["responses", "operationId"],
    "properties": {
        "tags": {"type": "array", "items": {"type": "string"}},
        "summary": {"type": "string"},
        "description": {"type": "string"},
        "operationId": {"type": "string"},
        "parameters": {"type": "array", "items": PARAMETER},
        "requestBody": {
            "type": "object",
            "required": ["content"],
            "properties": {"content": MEDIA, "required": {"type": "boolean"}},
            "additionalProperties": False,
        },
        "responses": {
            "type": "object",
            "minProperties": 1,
            "propertyNames": {"pattern": "^([1-5][0-9X]{2}|default)$"},
            "additionalProperties": {"anyOf": [REF, RESPONSE]},
        },
        "security": {"type": "array"},
    },
    "additionalProperties": False,
}
OPENAPI_SHAPE = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["openapi", "info", "paths"],
    "properties": {
        "openapi": {"type": "string", "pattern": r"^3\.1\.\d+$"},
        "info": {
            "type": "object",
            "required": ["title", "version"],
            "properties": {
                "title": {"type": "string"},
                "version": {"type": "string"},
                "description": {"type": "string"},
            },
        },
        "servers": {"type": "array", "items": {"type": "object", "required": ["url"]}},
        "security": {"type": "array"},
        "paths": {
            "type": "object",
            "propertyNames": {"pattern": "^/"},
            "additionalProperties": {
                "type": "object",
                "propertyNames": {"enum": [*METHODS, "summary", "description", "parameters"]},
                "additionalProperties": OPERATION,
            },
        },
        "components": {
            "type": "object",
            "properties": {
                "schemas": {"type": "object"},
                "responses": {"type": "object", "additionalProperties": RESPONSE},
                "securitySchemes": {
                    "type": "object",
                    "additionalProperties": {
                        "type": "object",
                        "required": ["type"],
                        "properties": {"type": {"enum": ["apiKey", "http", "oauth2",
                                                         "openIdConnect", "mutualTLS"]}},
                    },
                },
            },
            "additionalProperties": False,
        },
    },
    "additionalProperties": False,
}  # fmt: skip


def api_routes() -> dict[str, set[str]]:
    """OpenAPI path -> methods, for every route of runs/api_urls.py but the catch-all 404."""
    routes = {}
    for pattern in api_urls.urlpatterns:
        assert isinstance(pattern, URLPattern)
        if pattern.name == "api-unknown":
            continue
        route = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", str(pattern.pattern))
        methods = {method.lower() for method in pattern.callback.allowed_methods} - {"head"}
        routes[f"/api/v1/{route}"] = methods
    return routes


def test_every_route_is_described_with_exactly_its_methods():
    described = {
        path: {key for key in item if key in METHODS} for path, item in DOCUMENT["paths"].items()
    }
    assert described == api_routes()


def test_the_document_has_the_shape_of_openapi_3_1():
    Draft202012Validator.check_schema(OPENAPI_SHAPE)
    errors = sorted(Draft202012Validator(OPENAPI_SHAPE).iter_errors(DOCUMENT), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors[:10])


def test_every_schema_is_valid_json_schema_and_every_ref_resolves():
    for schema in DOCUMENT["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)  # raises, naming the bad keyword

    def refs(value: Any):
        if isinstance(value, dict):
            if "$ref" in value:
                yield value["$ref"]
            for item in value.values():
                yield from refs(item)
        elif isinstance(value, list):
            for item in value:
                yield from refs(item)

    for ref in set(refs(DOCUMENT)):
        assert ref.startswith("#/"), ref
        target: Any = DOCUMENT
        for part in ref[2:].split("/"):
            assert part in target, f"{ref} does not resolve"
            target = target[part]


def test_path_parameters_match_the_path_templates_and_operation_ids_are_unique():
    operation_ids = []
    for path, item in DOCUMENT["paths"].items():
        in_template = set(re.findall(r"{(\w+)}", path))
        for method, operation in item.items():
            declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert declared == in_template, (path, method)
            operation_ids.append(operation["operationId"])
    assert len(operation_ids) == len(set(operation_ids))


@pytest.mark.django_db
def test_the_document_is_served_to_anyone(client):
    response = client.get("/api/v1/openapi.json", headers={"Authorization": "Bearer wrong"})
    assert response.status_code == 200 and response.json() == DOCUMENT
    assert client.post("/api/v1/openapi.json").status_code == 405


# ------------------------------------------------------------------ responses match the schemas


def schema_for(path: str, method: str, status: int) -> dict[str, Any]:
    operation = DOCUMENT["paths"][path][method]
    response = operation["responses"].get(str(status))
    assert response is not None, f"{method.upper()} {path} does not document {status}"
    if "$ref" in response:
        response = DOCUMENT["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
    content = response["content"]
    assert "application/json" in content, f"{method.upper()} {path} {status} is not JSON"
    # Refs point into the document: validate with the components beside the schema.
    return {**content["application/json"]["schema"], "components": DOCUMENT["components"]}


@pytest.mark.django_db
def test_real_responses_validate_against_the_documented_schemas(client, world):
    run = world.runs["private"]
    job = start(run, "build")
    add_chunk(job, [[1.0, "stdout", "hello"], [2.0, "warning", "careful", {"file": "a.py"}]])
    ended = world.runs["public"]
    execute(ended, "build")
    execute(ended, "test", "failure")
    job_id, run_id = job.id, run.id
    other_job = jobs_of(ended)["test"].id

    cases = [
        # (template, method, concrete path, persona, body)
        ("/api/v1/user", "get", "/api/v1/user", "reader", None),
        ("/api/v1/user", "get", "/api/v1/user", "anonymous", None),
        ("/api/v1/runs", "get", "/api/v1/runs", "reader", None),
        ("/api/v1/runs", "get", "/api/v1/runs?limit=1", "superuser", None),
        ("/api/v1/runs", "get", "/api/v1/runs?limit=x", "reader", None),
        ("/api/v1/repos/{organisation}/{repository}/runs", "get",
         "/api/v1/repos/acme/secret/runs", "writer", None),
        ("/api/v1/repos/{organisation}/{repository}/runs", "get",
         "/api/v1/repos/acme/secret/runs", "outsider", None),
        ("/api/v1/runs/{run_id}", "get", f"/api/v1/runs/{run_id}", "reader", None),
        ("/api/v1/runs/{run_id}", "get", f"/api/v1/runs/{run_id}", "outsider", None),
        ("/api/v1/runs/{run_id}/artifacts", "get", f"/api/v1/runs/{run_id}/artifacts", "reader",
         None),
        ("/api/v1/jobs/{job_id}", "get", f"/api/v1/jobs/{job_id}", "reader", None),
        ("/api/v1/jobs/{job_id}/logs", "get", f"/api/v1/jobs/{job_id}/logs?offset=1", "reader",
         None),
        ("/api/v1/jobs/{job_id}/cancel", "post", f"/api/v1/jobs/{job_id}/cancel", "reader", None),
        ("/api/v1/jobs/{job_id}/cancel", "post", f"/api/v1/jobs/{other_job}/cancel", "writer",
         None),
        ("/api/v1/jobs/{job_id}/approve", "post", f"/api/v1/jobs/{job_id}/approve", "org_admin",
         None),
        ("/api/v1/runs/{run_id}/rerun", "post", f"/api/v1/runs/{ended.id}/rerun", "writer",
         {"failed_only": "x"}),
        ("/api/v1/runs/{run_id}/rerun", "post", f"/api/v1/runs/{ended.id}/rerun", "writer",
         {"failed_only": True}),
        ("/api/v1/runs/{run_id}/rerun-failed", "post", f"/api/v1/runs/{ended.id}/rerun-failed",
         "writer", None),
        ("/api/v1/runs/{run_id}/cancel", "post", f"/api/v1/runs/{run_id}/cancel", "anonymous",
         None),
        ("/api/v1/runs/{run_id}/cancel", "post", f"/api/v1/runs/{run_id}/cancel", "writer", None),
        ("/api/v1/repos/{organisation}/{repository}/dispatches", "post",
         "/api/v1/repos/acme/open/dispatches", "writer", {"workflow": 3}),
        ("/api/v1/repos/{organisation}/{repository}/dispatches", "post",
         "/api/v1/repos/acme/open/dispatches", "writer", {"workflow": "x.yml"}),
    ]  # fmt: skip
    seen_statuses = set()
    for template, method, path, persona, body in cases:
        response = call(client, world, persona, method.upper(), path, body)
        schema = schema_for(template, method, response.status_code)
        errors = list(Draft202012Validator(schema).iter_errors(response.json()))
        assert not errors, (path, response.status_code, [e.message for e in errors[:5]])
        seen_statuses.add(response.status_code)
    assert {200, 201, 202, 400, 401, 403, 404, 409, 422} <= seen_statuses
