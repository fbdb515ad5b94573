"""``ov-llm-server``: run the service, print a LiteLLM config for it, check the host, or time
the models on it."""

from __future__ import annotations

import argparse
import logging
import sys

from pydantic import ValidationError

from .settings import Settings

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def load_settings() -> Settings:
    """Settings from the environment; an invalid value ends the process with one line."""
    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        name = "OV_" + str(first["loc"][0]).upper() if first["loc"] else "settings"
        message = str(first["msg"]).removeprefix("Value error, ")
        sys.stderr.write(f"ov-llm-server: invalid {name}: {message}\n")
        raise SystemExit(2) from None


def configure_logging(level: str) -> None:
    from .serving.generation import abandoned_streams

    logging.basicConfig(level=level, format=LOG_FORMAT, stream=sys.stderr, force=True)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.error").addFilter(abandoned_streams)


def serve(settings: Settings) -> None:
    import uvicorn

    from .app import create_app

    configure_logging(settings.log_level)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=int(settings.shutdown_grace_seconds),
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="ov-llm-server", description="OpenAI-compatible chat backend for OpenVINO models."
    )
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("serve", help="run the service (the default)")
    from . import litellm

    litellm.add_arguments(
        sub.add_parser("litellm-config", help="print a LiteLLM proxy configuration for the nodes")
    )
    from .doctor.cli import add_arguments as add_doctor_arguments

    add_doctor_arguments(sub.add_parser("doctor", help="check that this host can serve"))
    from .hostbench.cli import add_arguments as add_bench_arguments

    add_bench_arguments(
        sub.add_parser("bench", help="time the models on this host's devices, write a report")
    )
    args = parser.parse_args(argv)
    settings = load_settings()
    if args.command == "doctor":
        from .doctor.cli import run as run_doctor

        raise SystemExit(run_doctor(args, settings))
    if args.command == "bench":
        from .hostbench.cli import run as run_bench

        raise SystemExit(run_bench(args, settings))
    if args.command == "litellm-config":
        try:
            sys.stdout.write(litellm.run(args, settings))
        except (OSError, ValueError) as exc:
            sys.stderr.write(f"ov-llm-server litellm-config: {exc}\n")
            raise SystemExit(2) from None
        return
    serve(settings)
