"""``thinktwice serve``: the OpenAI-compatible proxy that runs a strategy per request."""

from __future__ import annotations

import os

import typer

from thinktwice.cli.common import err, parse_kv

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve(
        upstream: list[str] | None = typer.Option(
            None,
            "--upstream",
            "-u",
            help="OpenAI-compatible upstream base URL (repeatable). Default: the embedded model.",
        ),
        api_key: str | None = typer.Option(
            None, "--api-key", help="Key the proxy sends upstream (default: $OPENAI_API_KEY)."
        ),
        model: str | None = typer.Option(None, "--model", "-m", help="Default upstream model name."),
        strategy: str = typer.Option(
            "adaptive-consistency",
            "--strategy",
            help="Default strategy for requests that name none ('passthrough' forwards untouched).",
        ),
        options: list[str] | None = typer.Option(
            None, "-o", "--option", help="Option of the default strategy, key=value (repeatable)."
        ),
        host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on."),
        port: int = typer.Option(8000, "--port", "-p", help="Port to listen on."),
        keys: str | None = typer.Option(
            None,
            "--keys",
            help="Client API keys the proxy accepts, comma-separated (default: $THINKTWICE_API_KEYS; "
            "none: no authentication).",
        ),
        max_n: int = typer.Option(8, "--max-n", help="Most choices (n) per request."),
        max_tokens: int = typer.Option(4096, "--max-tokens", help="Most tokens per generated sample."),
        max_body_bytes: int = typer.Option(4 * 1024 * 1024, "--max-body-bytes", help="Largest request body."),
        budget_tokens: int = typer.Option(
            65536, "--budget-tokens", help="Most generated tokens one decision may spend."
        ),
        max_samples: int = typer.Option(64, "--max-samples", help="Most samples one decision may draw."),
        timeout: float = typer.Option(120.0, "--timeout", help="Upstream call timeout in seconds."),
        request_timeout: float = typer.Option(
            600.0, "--request-timeout", help="Whole-request timeout, seconds."
        ),
        concurrency: int = typer.Option(256, "--concurrency", help="Most upstream requests in flight."),
    ) -> None:
        """Serve /v1/chat/completions, /v1/completions, /v1/models, /health and /metrics."""
        import uvicorn

        from thinktwice.errors import ConfigError
        from thinktwice.serve import PASSTHROUGH, ServeConfig, create_app
        from thinktwice.serve.app import build_backend, uvicorn_options
        from thinktwice.strategies import create_strategy

        key_text = keys if keys is not None else os.environ.get("THINKTWICE_API_KEYS", "")
        cfg = ServeConfig(
            upstreams=tuple(upstream or ()),
            upstream_api_key=api_key if api_key is not None else os.environ.get("OPENAI_API_KEY"),
            model=model,
            strategy=strategy,
            strategy_options=parse_kv(options),
            api_keys=tuple(k.strip() for k in key_text.split(",") if k.strip()),
            max_n=max_n,
            max_tokens=max_tokens,
            max_body_bytes=max_body_bytes,
            budget_tokens=budget_tokens,
            max_samples=max_samples,
            timeout_s=timeout,
            request_timeout_s=request_timeout,
            max_concurrency=concurrency,
        )
        if cfg.strategy != PASSTHROUGH:
            create_strategy(cfg.strategy, **cfg.strategy_options)  # fail now, with one line, if it is wrong
        elif cfg.strategy_options:
            raise ConfigError("the passthrough strategy takes no options")
        if not cfg.api_keys and host not in ("127.0.0.1", "localhost", "::1"):
            err.print(
                f"[yellow]warning:[/yellow] listening on {host} without --keys: anyone who can reach it "
                "can use the upstream"
            )
        backend = build_backend(cfg)  # here, so a missing model or package is a one-line error
        where = ", ".join(cfg.upstreams) or f"the embedded model ({backend.model})"
        err.print(
            f"thinktwice proxy on http://{host}:{port}/v1 -> {where} (default strategy: {cfg.strategy})"
        )
        uvicorn.run(
            create_app(cfg, backend=backend, own_backend=True),
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            **uvicorn_options(),
        )
