"""``regionspot serve``: an HTTP API (FastAPI) and web page over one RegionSpot model.

    from regionspot.serve import ServeConfig, create_app
    app = create_app(model, ServeConfig())   # then: uvicorn.run(app)

``ServeConfig`` needs only the core package; ``create_app`` needs the ``serve`` extra
(fastapi, uvicorn, python-multipart).
"""

from __future__ import annotations

from typing import Any

from regionspot.serve.config import ServeConfig, ServeLimits, check_serve_config

__all__ = ["ServeConfig", "ServeLimits", "check_serve_config", "create_app"]


def __getattr__(name: str) -> Any:
    """Import FastAPI only when the app is asked for."""
    if name == "create_app":
        from regionspot.serve.app import create_app

        return create_app
    raise AttributeError(f"module 'regionspot.serve' has no attribute {name!r}")
