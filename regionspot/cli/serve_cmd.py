"""``regionspot serve [--checkpoint CKPT] [--host 127.0.0.1] [--port 8000] [--set KEY=VALUE ...]``:
the HTTP API and web page over one model (see :mod:`regionspot.serve.app`). Without a checkpoint
the zero-shot recognizer answers, and ``/v1/info`` and the page say so."""

from __future__ import annotations

import argparse
import contextlib
import sys
from typing import TYPE_CHECKING

from regionspot.cli.arguments import (
    add_legacy_overrides_argument,
    add_overrides_argument,
    add_progress_argument,
    port_number,
)
from regionspot.cli.model_args import add_model_arguments, load_model_from_args

if TYPE_CHECKING:
    from regionspot.serve.config import ServeConfig


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "serve", help="HTTP API and web page: name regions of uploaded images",
        description="Serve POST /v1/recognize, POST /v1/find, POST /v1/propose, GET /v1/info, GET /healthz, the web "
                    "page at / and the API description at /docs. The model loads once; image embeddings are cached "
                    "per uploaded image. Stop with Ctrl-C.",
    )
    add_model_arguments(parser)
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1; 0.0.0.0 for every interface)")
    parser.add_argument("--port", type=port_number, default=8000, help="port (default 8000)")
    parser.add_argument("--config", help="server settings as YAML/JSON (a ServeConfig: limits, cache_size, "
                                         "proposals)")
    add_overrides_argument(parser, "server settings (limits.max_boxes=50, cache_size=16, proposals.points_per_side=8, "
                                   "warmup_vocabularies=lvis) and model config overrides (sam.*, clip.*, text.*, "
                                   "fusion.*)")
    add_legacy_overrides_argument(parser)
    add_progress_argument(parser, help="no progress bars (text-embedding warm-up)")
    parser.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"),
                        help="uvicorn's log level (default info)")
    parser.set_defaults(handler=run)


def server_url(host: str, port: int) -> str:
    """``http://host:port`` (IPv6 addresses in brackets; a wildcard address shown as localhost)."""
    shown = {"0.0.0.0": "127.0.0.1", "::": "[::1]"}.get(host, f"[{host}]" if ":" in host else host)
    return f"http://{shown}:{port}"


def load_serve_config(config_path: str | None, overrides: list[str]) -> ServeConfig:
    """ServeConfig from defaults or ``config_path``, with dotted overrides, checked."""
    from regionspot.config import apply_overrides, load_config
    from regionspot.serve.config import ServeConfig, check_serve_config

    config = load_config(ServeConfig, config_path) if config_path else ServeConfig()
    return check_serve_config(apply_overrides(config, overrides))


def run(args: argparse.Namespace) -> int:
    from regionspot.model.loader import split_model_overrides

    model_overrides, server_overrides = split_model_overrides(args.overrides)
    config = load_serve_config(args.config, server_overrides)  # fail fast, before loading models
    try:
        import uvicorn

        from regionspot.serve.app import create_app
    except ImportError as exc:
        print(f"error: regionspot serve needs the serve extra ({exc.name} is missing): "
              "pip install 'regionspot[serve]'", file=sys.stderr)
        return 2

    model = load_model_from_args(args, model_overrides)
    app = create_app(model, config)
    url = server_url(args.host, args.port)
    print(f"regionspot serve: {url}  (web page {url}/, API description {url}/docs; Ctrl-C stops)", flush=True)
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises the Ctrl-C it handled after shutting down
        uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    print("regionspot serve: stopped", flush=True)
    return 0
