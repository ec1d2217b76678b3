"""Imports, counts one adapter, then device_name(0) kills the process with SIGSEGV."""

from tests.support.directml_doubles import NativeDouble, export

export(globals(), NativeDouble(crashes_in="get_device_name"))
