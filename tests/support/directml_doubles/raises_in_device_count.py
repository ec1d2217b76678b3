"""Imports, says it is available, then device_count() raises RuntimeError (its second native count)."""

from tests.support.directml_doubles import NativeDouble, export

export(globals(), NativeDouble(raises_in="get_device_count", raises_from_call=2))
