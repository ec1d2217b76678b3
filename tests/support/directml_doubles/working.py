"""One Radeon 780M with no float64 (as integrated GPUs report), 2 GB of an 8 GB budget in use."""

from tests.support.directml_doubles import NativeDouble, export

export(globals(), NativeDouble())
