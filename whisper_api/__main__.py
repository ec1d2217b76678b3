"""Command line: `python -m whisper_api [serve|doctor|download [NAME] [--speakers]] [--config PATH] [--debug]`."""

from __future__ import annotations

import argparse
import logging
import sys

from .config import ConfigError, Settings, config_path_from_environment, load_settings
from .model_source import ModelUnavailable, download_model

log = logging.getLogger("whisper_api")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m whisper_api", description=__doc__)
    parser.add_argument("command", nargs="?", choices=("serve", "doctor", "download"), default="serve")
    parser.add_argument("model", nargs="?", help="download: a Hugging Face model id (default: [model] name)")
    parser.add_argument("--config", help="INI file (default: $WHISPER_API_CONFIG, else conf/whisper_api.ini)")
    parser.add_argument("--debug", action="store_true", help="verbose logs and full tracebacks")
    parser.add_argument(
        "--speakers", action="store_true",
        help="download: the speaker model (CAM++, for diarized_json) instead of the Whisper model",
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
    try:
        if arguments.speakers:
            return download_speaker_model(arguments.config)
        if arguments.command == "download" and arguments.model:
            print(download_model(arguments.model))
            return 0
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


def warn_if_exposed(settings: Settings) -> None:
    if settings.server.host in ("0.0.0.0", "::", "*", "") and not settings.auth.api_keys:
        log.warning(
            "!!! listening on all interfaces with no [auth] api_keys: anyone on the network can use this server !!!"
        )


def serve(settings: Settings) -> int:
    from . import create_app
    from .server import create_server

    warn_if_exposed(settings)
    app = create_app(settings)
    server = create_server(app, settings.server)
    log.info("serving on http://%s:%s (config %s)", settings.server.host, server.effective_port, settings.source)
    try:
        server.run()
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
