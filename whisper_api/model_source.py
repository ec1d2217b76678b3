"""Where the model's files come from: a local folder, the Hugging Face cache, or one download.

`[model] name` may be a folder or a Hugging Face model id. A model id is looked up in the
Hugging Face cache first; only when it is missing there is the hub asked, after a short
connectivity check, so that a machine without internet hears so in seconds, in one line,
instead of after a minute of retries.
"""

from __future__ import annotations

import logging
import urllib.error
import urllib.request
from pathlib import Path

log = logging.getLogger(__name__)

# The transformers files only: repositories also hold TensorFlow, Flax and ONNX copies.
TRANSFORMERS_FILES = ["*.json", "*.txt", "*.safetensors", "*.tiktoken", "*.model"]
# Older repositories have no safetensors copy.
LEGACY_WEIGHTS = ["pytorch_model*.bin"]
CONNECTIVITY_TIMEOUT_SECONDS = 3.0


class ModelUnavailable(RuntimeError):
    """The model's files are neither local nor downloadable; the message says what to do."""


def resolve_model_path(name: str) -> str:
    """A local folder holding the checkpoint `name` stands for, downloading it if need be."""
    folder = Path(name).expanduser()
    if folder.is_dir():
        return str(folder)
    return cached_snapshot(name) or download_snapshot(name)


def cached_snapshot(name: str) -> str | None:
    """The cached snapshot of hub model `name` when it holds a config and weights, else None."""
    from huggingface_hub import snapshot_download

    try:
        path = snapshot_download(name, allow_patterns=TRANSFORMERS_FILES + LEGACY_WEIGHTS, local_files_only=True)
    except Exception:  # not cached, or not a valid model id: download_snapshot says which
        return None
    return path if has_checkpoint(Path(path)) else None


def has_checkpoint(folder: Path) -> bool:
    weights = any(folder.glob("*.safetensors")) or any(folder.glob("pytorch_model*.bin"))
    return weights and (folder / "config.json").is_file()


def download_snapshot(name: str) -> str:
    """Download hub model `name` into the Hugging Face cache, with progress bars; its folder."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(name)
    except ValueError:
        raise ModelUnavailable(
            f"[model] name = {name} is neither an existing folder nor a Hugging Face model id "
            "(such as openai/whisper-large-v3-turbo)"
        ) from None
    if constants.HF_HUB_OFFLINE:
        raise ModelUnavailable(f"model {name} is not in the Hugging Face cache and HF_HUB_OFFLINE is set. "
                               + what_to_do(name))
    problem = hub_problem(constants.ENDPOINT)
    if problem:
        raise ModelUnavailable(f"model {name} could not be downloaded: the Hugging Face hub ({constants.ENDPOINT}) "
                               f"is unreachable ({problem}). " + what_to_do(name))
    log.info("downloading model %s into the Hugging Face cache (%s)", name, constants.HF_HUB_CACHE)
    # Its retry warnings repeat each failure a dozen times; the one error below says it once.
    logging.getLogger("huggingface_hub.utils._http").setLevel(logging.ERROR)
    try:
        path = snapshot_download(name, allow_patterns=TRANSFORMERS_FILES)
        if not has_checkpoint(Path(path)):
            path = snapshot_download(name, allow_patterns=TRANSFORMERS_FILES + LEGACY_WEIGHTS)
    except Exception as error:
        raise ModelUnavailable(f"model {name} could not be downloaded: {first_line(error)}. "
                               + what_to_do(name)) from None
    if not has_checkpoint(Path(path)):
        raise ModelUnavailable(f"model {name} on the Hugging Face hub has no transformers checkpoint "
                               "(config.json and *.safetensors or pytorch_model*.bin)")
    return path


def hub_problem(endpoint: str) -> str | None:
    """Why the hub at `endpoint` cannot serve downloads now, or None when it answers.

    One request with a short timeout: any answer below 500 means the hub is there (a missing
    model is reported by the download itself).
    """
    request = urllib.request.Request(endpoint.rstrip("/") + "/", method="HEAD")
    try:
        with urllib.request.urlopen(request, timeout=CONNECTIVITY_TIMEOUT_SECONDS):
            return None
    except urllib.error.HTTPError as error:
        return None if error.code < 500 else f"it answered HTTP {error.code}"
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        return f"no answer within {CONNECTIVITY_TIMEOUT_SECONDS:.0f} s" if isinstance(reason, TimeoutError) \
            else str(reason)


def what_to_do(name: str) -> str:
    return (f"Either set [model] name to a local folder holding a transformers Whisper checkpoint, or run "
            f"`python -m whisper_api download {name}` once where there is internet "
            "(the model then stays in the Hugging Face cache)")


def first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines() or [type(error).__name__]
    return lines[0].rstrip(".")


def download_model(name: str) -> str:
    """`python -m whisper_api download NAME`: what was done, in one line; raises ModelUnavailable."""
    if Path(name).expanduser().is_dir():
        return f"{name} is a local folder: nothing to download"
    cached = cached_snapshot(name)
    if cached:
        return f"Model {name} is already in the Hugging Face cache: nothing to download ({cached})"
    print(f"Downloading {name} into the Hugging Face cache ...", flush=True)
    return f"Model {name} is ready: {download_snapshot(name)}"
