"""WSGI entry point: `waitress-serve --listen=127.0.0.1:8000 wsgi:app` (--listen from the INI's host and port;
settings from $WHISPER_API_CONFIG or conf/whisper_api.ini)."""

from whisper_api import create_app
from whisper_api.memory import configure_allocator, settle_after_start_up

configure_allocator()  # before Waitress starts its threads: memory given back after jobs
app = create_app()
settle_after_start_up()  # the model's objects are never scanned by the garbage collector again
