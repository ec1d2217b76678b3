"""WSGI entry point: `waitress-serve wsgi:app` (settings from $WHISPER_API_CONFIG or conf/whisper_api.ini)."""

from whisper_api import create_app

app = create_app()
