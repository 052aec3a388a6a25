"""The server's OpenAPI description is true: Schemathesis drives every endpoint from it
(positive and negative cases) and checks no 5xx and responses that conform."""

import os

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable

from cnnlab.deploy.serve import ServeConfig, create_app

from .conftest import live_server

schemathesis = pytest.importorskip("schemathesis")


def test_spec_describes_bodies_responses_and_errors(backend):
    with TestClient(create_app(backend)) as c:
        spec = c.get("/openapi.json").json()
    op = spec["paths"]["/v1/predict"]["post"]
    body = op["requestBody"]["content"]
    assert {"multipart/form-data", "application/json", "image/png"} <= body.keys()
    assert body["image/png"]["schema"]["format"] == "binary"
    assert body["application/json"]["schema"]["properties"]["pixels"]["type"] == "array"
    assert {"200", "400", "408", "413", "415"} <= op["responses"].keys()
    ok = op["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok.get("$ref", "").endswith("/PredictResponse")
    err = op["responses"]["400"]["content"]["application/json"]["schema"]
    assert err.get("$ref", "").endswith("/ErrorBody")
    assert spec["components"]["schemas"]["ErrorBody"]["required"] == ["error"]
    assert list(op["responses"]["200"]["content"]) == ["application/json"]
    metrics = spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(metrics) == ["text/plain"]
    for path, ops in spec["paths"].items():
        for o in ops.values():
            assert o["responses"]["200"]["content"], path


def test_swagger_page_works_offline(backend):
    with TestClient(create_app(backend)) as c:
        page = c.get("/docs")
        assert page.status_code == 200
        assert "http://" not in page.text and "https://" not in page.text
        for asset in ("/docs-assets/swagger-ui-bundle.js", "/docs-assets/swagger-ui.css"):
            assert asset in page.text
            r = c.get(asset)
            assert r.status_code == 200 and len(r.content) > 10_000


def run_schemathesis(app, examples: int, headers: dict | None = None) -> int:
    """Schemathesis against a live server (one session, no app start per case)."""
    with live_server(app) as (host, port):
        url = f"http://{host}:{port}/openapi.json"
        return _run(schemathesis.openapi.from_url(url, config=_config()), examples, headers)


def _config():
    """Schemathesis' defaults, and 413 counted as a rejection of invalid data: a request
    can be invalid in two ways at once (a mistyped option and more images than
    ``--max-images``), and the server may name either."""
    from schemathesis.config import SchemathesisConfig

    statuses = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428"]
    rejected = {"expected-statuses": [*statuses, "429", "5xx"]}
    return SchemathesisConfig.from_dict({"checks": {"negative_data_rejection": rejected}})


def _run(schema, examples: int, headers: dict | None) -> int:
    from schemathesis.generation import GenerationMode
    from schemathesis.specs.openapi import checks as oc

    checks = [
        schemathesis.checks.not_a_server_error,
        oc.status_code_conformance,
        oc.content_type_conformance,
        oc.response_schema_conformance,
        oc.negative_data_rejection,
    ]
    ran = 0
    for result in schema.get_all_operations():
        op = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=op.as_strategy(generation_mode=mode))
            @settings(
                max_examples=examples,
                deadline=None,
                database=None,
                derandomize=True,
                suppress_health_check=list(HealthCheck),
            )
            def call(case):
                nonlocal ran
                ran += 1
                case.call_and_validate(checks=checks, headers=headers)

            try:
                call()
            except Unsatisfiable:  # no parameters or body to make invalid (GET /healthz)
                assert mode == GenerationMode.NEGATIVE
    return ran


def test_schemathesis_fast(backend):
    ran = run_schemathesis(create_app(backend, ServeConfig(max_images=4)), examples=5)
    assert ran >= 20


@pytest.mark.slow
@pytest.mark.parametrize("auth", [False, True])
def test_schemathesis_thousands_of_cases(backend, auth):
    """A few thousand cases without auth (CNNLAB_SCHEMATHESIS_EXAMPLES per operation and
    mode), a few hundred with a bearer token."""
    key = "k" * 24
    cfg = ServeConfig(max_images=4, api_key=key if auth else None)
    n = int(os.environ.get("CNNLAB_SCHEMATHESIS_EXAMPLES", "600")) // (6 if auth else 1)
    ran = run_schemathesis(
        create_app(backend, cfg),
        examples=n,
        headers={"Authorization": f"Bearer {key}"} if auth else None,
    )
    assert ran >= 3 * n
