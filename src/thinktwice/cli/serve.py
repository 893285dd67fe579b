"""``thinktwice serve``: the OpenAI-compatible proxy that runs a strategy per request."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import typer

from thinktwice.cli.common import err, parse_kv
from thinktwice.errors import ConfigError

__all__ = ["api_keys", "register"]

_ARGV_WARNING = (
    "[yellow]warning:[/yellow] --keys puts the client keys on the command line, where every local process "
    "can read them (ps, /proc/PID/cmdline); use --keys-file PATH or $THINKTWICE_API_KEYS instead"
)


def api_keys(keys: str | None, keys_file: Path | None, environ: dict[str, str] | None = None) -> tuple[str, ...]:
    """The client keys: ``--keys`` (warned: argv is public), else ``--keys-file``, else ``$THINKTWICE_API_KEYS``.

    A keys file holds one key per line (or comma-separated; ``#`` comments); one that cannot be read or holds
    no key is an error, never a server without authentication.
    """
    from thinktwice.serve.config import parse_api_keys

    if keys is not None and keys_file is not None:
        raise ConfigError("give --keys or --keys-file, not both")
    if keys is not None:
        err.print(_ARGV_WARNING)
        return parse_api_keys(keys)
    if keys_file is not None:
        try:
            text = keys_file.read_text(encoding="utf-8")
            mode = keys_file.stat().st_mode
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"--keys-file {keys_file}: cannot read it ({e})") from None
        found = parse_api_keys(text)
        if not found:
            raise ConfigError(f"--keys-file {keys_file}: no keys in it (one per line); refusing to serve "
                              "without authentication")
        if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
            err.print(f"[yellow]warning:[/yellow] {keys_file} is readable by other users; chmod 600 it")
        return found
    return parse_api_keys((os.environ if environ is None else environ).get("THINKTWICE_API_KEYS", ""))


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
            help="Client API keys the proxy accepts, comma-separated. Visible to every local process: "
            "prefer --keys-file or $THINKTWICE_API_KEYS (none of the three: no authentication).",
        ),
        keys_file: Path | None = typer.Option(
            None, "--keys-file", help="File of client API keys, one per line (default: $THINKTWICE_API_KEYS)."
        ),
        max_n: int = typer.Option(8, "--max-n", help="Most choices (n) per request."),
        max_tokens: int = typer.Option(4096, "--max-tokens", help="Most tokens per generated sample."),
        max_body_bytes: int = typer.Option(4 * 1024 * 1024, "--max-body-bytes", help="Largest request body."),
        budget_tokens: int = typer.Option(
            65536, "--budget-tokens", help="Most generated tokens one decision may spend."
        ),
        max_samples: int = typer.Option(64, "--max-samples", help="Most samples one decision may draw."),
        timeout: float = typer.Option(
            600.0, "--timeout", help="Seconds one upstream generation may take (read timeouts are not resent)."),
        request_timeout: float = typer.Option(
            600.0, "--request-timeout", help="Whole-request timeout, seconds."
        ),
        concurrency: int = typer.Option(256, "--concurrency", help="Most upstream requests in flight."),
        requests_per_minute: int | None = typer.Option(
            None, "--requests-per-minute", help="Requests per minute per client key (default: no limit); 429 past it."
        ),
        tokens_per_minute: int | None = typer.Option(
            None, "--tokens-per-minute",
            help="Generated tokens per minute billed to each client key (default: no limit); 429 past it.",
        ),
        header_timeout: float = typer.Option(
            10.0, "--header-timeout", help="Seconds a client has to send a complete request head."
        ),
        body_timeout: float = typer.Option(30.0, "--body-timeout", help="Seconds a client has to send the whole body."),
        keep_alive_timeout: float = typer.Option(
            5.0, "--keep-alive-timeout", help="Seconds an idle kept-alive connection stays open."
        ),
        max_request_samples: int | None = typer.Option(
            None, "--max-request-samples",
            help="Most generated sequences one request may cause over its prompts and choices "
                 "(default: --max-n x --max-samples); 400 above it."),
        max_request_tokens: int | None = typer.Option(
            None, "--max-request-tokens",
            help="Most generated tokens one request may cause (default: --max-n x --budget-tokens); 400 above it."),
        max_tokens_policy: str = typer.Option(
            "clamp", "--max-tokens-policy",
            help="A max_tokens above --max-tokens: 'clamp' (lowered, with a Warning header) or 'refuse' (400)."),
        fallback: str | None = typer.Option(
            None, "--fallback",
            help="'passthrough': forward requests a strategy cannot serve honestly (echo, prompt logprobs, tools) "
                 "instead of answering 400."),
        stream_keepalive: float = typer.Option(
            5.0, "--stream-keepalive", help="Seconds of silence before a strategy's stream sends a keep-alive."),
    ) -> None:
        """Serve /v1/chat/completions, /v1/completions, /v1/models, /health and /metrics."""
        import uvicorn

        from thinktwice.serve import PASSTHROUGH, ServeConfig, create_app
        from thinktwice.serve.app import build_backend, uvicorn_options
        from thinktwice.strategies import create_strategy

        if not 1 <= port <= 65535:
            raise ConfigError(f"--port must be between 1 and 65535, got {port}")
        cfg = ServeConfig(
            upstreams=tuple(upstream or ()),
            upstream_api_key=api_key if api_key is not None else os.environ.get("OPENAI_API_KEY"),
            model=model,
            strategy=strategy,
            strategy_options=parse_kv(options),
            api_keys=api_keys(keys, keys_file),
            max_n=max_n,
            max_tokens=max_tokens,
            max_body_bytes=max_body_bytes,
            budget_tokens=budget_tokens,
            max_samples=max_samples,
            timeout_s=timeout,
            request_timeout_s=request_timeout,
            max_concurrency=concurrency,
            requests_per_minute=requests_per_minute,
            tokens_per_minute=tokens_per_minute,
            header_timeout_s=header_timeout,
            body_timeout_s=body_timeout,
            keep_alive_timeout_s=keep_alive_timeout,
            max_request_samples=max_request_samples,
            max_request_tokens=max_request_tokens,
            max_tokens_policy=max_tokens_policy,
            fallback=fallback,
            stream_keepalive_s=stream_keepalive,
        )
        if cfg.strategy != PASSTHROUGH:
            create_strategy(cfg.strategy, **cfg.strategy_options)  # fail now, with one line, if it is wrong
        elif cfg.strategy_options:
            raise ConfigError("the passthrough strategy takes no options")
        if not cfg.api_keys and host not in ("127.0.0.1", "localhost", "::1"):
            err.print(
                f"[yellow]warning:[/yellow] listening on {host} without client keys: anyone who can reach it "
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
            **uvicorn_options(cfg),
        )
