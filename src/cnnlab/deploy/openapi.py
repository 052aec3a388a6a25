"""The server's documentation: ``/openapi.json`` as the server is configured (the bearer
token and the 401 where an API key is set, the 429 where a rate limit is) and ``/docs``,
Swagger UI served from the package (fastapi-offline's copy: no CDN, works offline). The
response models and request-body schemas themselves are in ``schema.py``."""

from __future__ import annotations

from pathlib import Path

from cnnlab.deploy.bodies import InputError

ERROR_REF = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}


def docs_assets() -> Path | None:
    """Swagger UI's files from the fastapi-offline package (no CDN), if it is installed."""
    try:
        import fastapi_offline
    except ImportError:
        return None
    p = Path(fastapi_offline.__file__).with_name("static")
    return p if (p / "swagger-ui-bundle.js").is_file() else None


def describe_access(spec: dict, api_key: bool, public_metrics: bool, rate_limit: float) -> dict:
    """``spec`` with what the server's access rules add: the bearer scheme and a 401 on every
    operation that needs the token; a 429 on ``/v1/*`` under a rate limit."""
    if api_key:
        spec.setdefault("components", {})["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer"}
        }
        for path, ops in spec["paths"].items():
            if path == "/healthz" or (path == "/metrics" and public_metrics):
                continue
            for op in ops.values():
                op["security"] = [{"bearer": []}]
                op["responses"]["401"] = {
                    "description": "missing or wrong API key",
                    "content": ERROR_REF,
                }
    if rate_limit:
        for path, ops in spec["paths"].items():
            if path.startswith("/v1/"):
                for op in ops.values():
                    op["responses"]["429"] = {
                        "description": "rate limit exceeded (see Retry-After)",
                        "headers": {"Retry-After": {"schema": {"type": "integer"}}},
                        "content": ERROR_REF,
                    }
    return spec


def add_docs(app, cfg) -> None:
    """``/docs`` and the configured ``/openapi.json`` (built once, on the first request)."""
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.openapi.utils import get_openapi
    from fastapi.staticfiles import StaticFiles

    assets = docs_assets()

    @app.get("/docs", include_in_schema=False)
    async def docs():
        if assets is None:
            raise InputError(
                "Swagger UI needs the fastapi-offline package; /openapi.json works", 404
            )
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="cnnlab inference — API",
            swagger_js_url="/docs-assets/swagger-ui-bundle.js",
            swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="/favicon.ico",
        )

    def openapi():
        if app.openapi_schema is None:
            spec = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            app.openapi_schema = describe_access(
                spec, bool(cfg.api_key), cfg.public_metrics, cfg.rate_limit
            )
        return app.openapi_schema

    app.openapi = openapi
    if assets is not None:
        app.mount("/docs-assets", StaticFiles(directory=assets), name="docs-assets")
