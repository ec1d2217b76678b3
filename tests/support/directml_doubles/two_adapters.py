"""The Radeon 780M and the Microsoft Basic Render Driver (software), the list a 780M laptop shows."""

from tests.support.directml_doubles import BASIC_RENDER_DRIVER, RADEON, NativeDouble, export

export(globals(), NativeDouble(adapters=(RADEON, BASIC_RENDER_DRIVER)))
