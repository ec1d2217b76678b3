"""Imports, but the native layer counts no adapter: is_available() is False, device_count() 0."""

from tests.support.directml_doubles import NativeDouble, export

export(globals(), NativeDouble(adapters=()))
