"""known_speaker_names[] and known_speaker_references[] from the form: checked and decoded.

As the hosted service: up to 4 speakers, each a short name with a data URL
(`data:audio/wav;base64,...`) of a 2 to 10 second clip of their voice, in the same order.
Every problem is a 400 naming the field.
"""

from __future__ import annotations

import base64
import binascii
import re

from werkzeug.datastructures import MultiDict

from .audio import SUPPORTED_FORMATS, AudioDecodeError, AudioTooLong, decode
from .errors import invalid_field
from .transcript import KnownSpeaker

NAMES = "known_speaker_names"
REFERENCES = "known_speaker_references"
MAX_KNOWN_SPEAKERS = 4
MIN_REFERENCE_SECONDS = 2.0
MAX_REFERENCE_SECONDS = 10.0
MAX_NAME_CHARACTERS = 64
# A form field may hold this much: a reference's data URL is the largest text a client sends
# (10 s of 48 kHz stereo float WAV is 5.1 MB in base64); Flask's default of 500 kB would cut
# even 10 s of 16 kHz WAV short with a 413.
MAX_FORM_FIELD_BYTES = 8 * 1024 * 1024
DATA_URL = re.compile(r"^data:(?P<media>[\w.+-]+/[\w.+-]+)?(?P<parameters>(;[\w.+-]+=[^;,]*)*);base64,(?P<data>.*)$",
                      re.DOTALL)


def form_list(form: MultiDict, field: str) -> list[str]:
    """The SDKs send `field[]` once per item; plain `field` is taken too."""
    return form.getlist(f"{field}[]") + form.getlist(field)


def sent(form: MultiDict) -> bool:
    return bool(form_list(form, NAMES) or form_list(form, REFERENCES))


def read_known_speakers(form: MultiDict) -> tuple[KnownSpeaker, ...]:
    names = [name.strip() for name in form_list(form, NAMES)]
    references = form_list(form, REFERENCES)
    if not names and not references:
        return ()
    if not references:
        raise invalid_field(REFERENCES, f"{NAMES}[] needs one {REFERENCES}[] clip per name, in the same order.")
    if not names:
        raise invalid_field(NAMES, f"{REFERENCES}[] needs one name per clip in {NAMES}[], in the same order.")
    if len(names) > MAX_KNOWN_SPEAKERS:
        raise invalid_field(NAMES, f"At most {MAX_KNOWN_SPEAKERS} known speakers; got {len(names)}.")
    if len(references) > MAX_KNOWN_SPEAKERS:
        raise invalid_field(REFERENCES, f"At most {MAX_KNOWN_SPEAKERS} known speaker references; got {len(references)}.")
    if len(names) != len(references):
        raise invalid_field(REFERENCES, f"Got {len(names)} {NAMES}[] but {len(references)} {REFERENCES}[]: send one clip per name.")
    for name in names:
        if not name or len(name) > MAX_NAME_CHARACTERS or "\ufffd" in name:
            raise invalid_field(NAMES, f"Each known speaker name must be 1 to {MAX_NAME_CHARACTERS} characters of text.")
    if len(set(names)) != len(names):
        raise invalid_field(NAMES, "Known speaker names must differ from each other.")
    return tuple(KnownSpeaker(name, reference_samples(index, url)) for index, (name, url) in enumerate(zip(names, references)))


def reference_samples(index: int, url: str):
    """The clip a data URL holds, decoded to 16 kHz mono; 400 unless it is audio of 2 to 10 s."""
    where = f"{REFERENCES}[{index}]"
    match = DATA_URL.match(url.strip())
    if match is None:
        raise invalid_field(REFERENCES, f"{where} is not a base64 data URL such as data:audio/wav;base64,....")
    media = (match.group("media") or "").lower()
    if media and not (media.startswith("audio/") or media.startswith("video/") or media == "application/octet-stream"):
        raise invalid_field(REFERENCES, f"{where} has media type {media[:40]!r}: send audio.")
    try:
        data = base64.b64decode(re.sub(r"\s+", "", match.group("data")), validate=True)
    except (binascii.Error, ValueError):
        raise invalid_field(REFERENCES, f"{where} is not valid base64.") from None
    try:
        audio = decode(data, max_seconds=MAX_REFERENCE_SECONDS + 1.0)
    except AudioTooLong:
        raise invalid_field(REFERENCES, f"{where} is longer than {MAX_REFERENCE_SECONDS:g} s: send a 2 to 10 s clip.") from None
    except AudioDecodeError as error:
        raise invalid_field(
            REFERENCES, f"{where} is not audio we can decode ({error}). Supported formats: {', '.join(SUPPORTED_FORMATS)}."
        ) from None
    if not MIN_REFERENCE_SECONDS <= audio.duration <= MAX_REFERENCE_SECONDS:
        raise invalid_field(
            REFERENCES, f"{where} lasts {audio.duration:.1f} s: a reference clip must last 2 to 10 seconds."
        )
    return audio.samples
