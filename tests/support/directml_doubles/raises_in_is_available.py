"""Imports, then is_available() raises RuntimeError with a meaningless error code."""

from tests.support.directml_doubles import NativeDouble, export

export(globals(), NativeDouble(raises_in="get_device_count"))
