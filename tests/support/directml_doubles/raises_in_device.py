"""Imports, lists the adapter, then device(i) raises RuntimeError when the device is opened."""

from tests.support.directml_doubles import NativeDouble, export

export(globals(), NativeDouble(raises_in="custom_device"))
