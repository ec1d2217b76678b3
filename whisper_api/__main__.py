"""Command line: `python -m whisper_api [serve|doctor|download [NAME] [--speakers]|stop [--port N] [--wait SECONDS]
[--force]] [--config PATH] [--debug]`."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from .config import ConfigError, Settings, config_path_from_environment, load_settings
from .model_source import ModelUnavailable, download_model
from .server import CannotListen

log = logging.getLogger("whisper_api")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m whisper_api", description=__doc__)
    parser.add_argument("command", nargs="?", choices=("serve", "doctor", "download", "stop"), default="serve")
    parser.add_argument("model", nargs="?", help="download: a Hugging Face model id (default: [model] name)")
    parser.add_argument("--config", help="INI file (default: $WHISPER_API_CONFIG, else conf/whisper_api.ini)")
    parser.add_argument("--debug", action="store_true", help="verbose logs and full tracebacks")
    parser.add_argument(
        "--speakers", action="store_true",
        help="download: the speaker model (CAM++, for diarized_json) instead of the Whisper model",
    )
    parser.add_argument("--port", type=int, help="stop: the server's port (default: [server] port)")
    parser.add_argument(
        "--wait", type=float, metavar="SECONDS",
        help="stop: how long to wait for it to exit (default: [server] shutdown_grace_seconds + 30)",
    )
    parser.add_argument(
        "--force", action="store_true", help="stop: end it at once if it is still running after the wait",
    )
    arguments = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if arguments.debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if arguments.model and arguments.command != "download":
        parser.error(f"only download takes a model name, not {arguments.command}")
    if arguments.speakers and (arguments.command != "download" or arguments.model):
        parser.error("--speakers goes with download alone: python -m whisper_api download --speakers")
    stop_options = [f"--{name}" for name in ("port", "wait", "force") if getattr(arguments, name) not in (None, False)]
    if stop_options and arguments.command != "stop":
        parser.error(f"{' '.join(stop_options)}: only for stop: python -m whisper_api stop [--port N] [--wait SECONDS]")
    if arguments.wait is not None and arguments.wait < 0:
        parser.error("--wait is a number of seconds, 0 or more")
    try:
        if arguments.speakers:
            return download_speaker_model(arguments.config)
        if arguments.command == "download" and arguments.model:
            print(download_model(arguments.model))
            return 0
        if arguments.command == "stop":
            from .stop_command import run_stop

            return run_stop(arguments.config, arguments.port, arguments.wait, arguments.force)
        settings = load_settings(config_path_from_environment(arguments.config))
        if arguments.command == "download":
            print(download_model(settings.model.name))
            return 0
        if arguments.command == "doctor":
            from .doctor import run_doctor

            return run_doctor(settings)
        return serve(settings)
    except ConfigError as error:
        return fail(f"configuration error: {error}", arguments.debug)
    except ModelUnavailable as error:  # says what to do already
        return fail(str(error), arguments.debug)
    except CannotListen as error:  # says which address and which setting
        return fail(f"{error} (in {settings.source})", arguments.debug)
    except KeyboardInterrupt:
        return 130
    except Exception as error:  # start-up failures end with one clear line, not a traceback
        return fail(f"{type(error).__name__}: {error}", arguments.debug)


def download_speaker_model(config: str | None) -> int:
    """Into [diarization] weights when the INI sets it, else the cache; never loads Whisper."""
    from pathlib import Path

    from .diarization.weights import SpeakerModelUnavailable, download_weights

    configured = load_settings(config_path_from_environment(config)).diarization.weights
    try:
        print(download_weights(Path(configured).expanduser() if configured else None))
    except SpeakerModelUnavailable as error:
        print(f"whisper-api: {error}", file=sys.stderr)
        return 1
    return 0


def fail(message: str, debug: bool) -> int:
    if debug:
        log.exception(message)
    print(f"whisper-api: {message}", file=sys.stderr)
    return 1 if not message.startswith("configuration error") else 2


def announce_exposure(settings: Settings) -> None:
    """One start-up line on who may call this server."""
    if not settings.auth.api_keys:
        log.info("no [auth] api_keys: only clients on this PC (loopback) are served; others get 401 until keys are set")
    elif settings.server.host in ("0.0.0.0", "::", "*", ""):
        log.info("listening on all interfaces: clients on the network need one of [auth] api_keys")


def serve(settings: Settings) -> int:
    """Bind the port first (a busy port is reported before the model loads for minutes), load the
    model, serve until a stop signal, and stop gracefully (whisper_api/server.py)."""
    from . import app_state, create_app, memory, stop_signals
    from .server import GracefulServer, attach_app, create_server

    memory.configure_allocator()
    server = create_server(None, settings.server)
    try:
        app = create_app(settings)
        memory.settle_after_start_up()
        attach_app(server, app)
        announce_exposure(settings)
        graceful = GracefulServer(server, app.extensions["whisper_api.shutdown"])
        restore_signals = stop_signals.install(graceful.request_stop, graceful.finished, server.effective_port)
        log.info("serving on http://%s:%s (config %s)", settings.server.host, server.effective_port, settings.source)
        try:
            clean = graceful.run()
        finally:
            restore_signals()
        # the model thread finishes its call (the jobs were cancelled; a call stops at its next step)
        clean = app.extensions[app_state.ENGINE].close() and clean
    finally:
        server.close()
    if not clean:
        # a thread is still inside the model: leaving through the interpreter's shutdown
        # would abort ("terminate called without an active exception"); the answers are sent
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
