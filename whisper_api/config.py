"""Settings: read once from the INI file, validated, then frozen."""

from __future__ import annotations

import configparser
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, TypeVar

DEFAULT_CONFIG_PATH = Path(__file__).resolve().parent.parent / "conf" / "whisper_api.ini"
CONFIG_ENV_VARIABLE = "WHISPER_API_CONFIG"

DEVICES = ("auto", "directml", "cuda", "cpu")
DTYPES = ("auto", "float32", "float16", "bfloat16", "int8")
ATTENTION_IMPLEMENTATIONS = ("sdpa", "eager")
STRATEGIES = ("auto", "vad", "sequential")

T = TypeVar("T")


class ConfigError(Exception):
    """A setting is missing or wrong; the message names file, section and key."""


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8000
    threads: int = 10
    max_upload_mb: float = 25.0
    max_queue: int = 4
    # jobs sharing the scheduler's batches at once (the rest wait in the queue)
    max_concurrent_jobs: int = 4
    # rows one encoder call or decoding step takes from all running jobs; 0 = auto, by device
    max_batch_rows: int = 0
    channel_timeout_seconds: int = 120
    connection_limit: int = 100
    require_api_version: bool = True
    # on a stop request (Ctrl+C, SIGTERM, the stop command) the running job may finish within this
    # many seconds, then it is cancelled
    shutdown_grace_seconds: float = 30.0

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


@dataclass(frozen=True)
class AuthSettings:
    api_keys: tuple[str, ...] = ()


@dataclass(frozen=True)
class MetricsSettings:
    # false opens GET /metrics without a key even when [auth] api_keys are set (a local scraper)
    require_api_key: bool = True


@dataclass(frozen=True)
class ModelSettings:
    name: str = "openai/whisper-large-v3-turbo"
    device: str = "auto"
    dtype: str = "auto"
    attention: str = "sdpa"
    strategy: str = "auto"
    batch_size: int = 0  # chunks of one job decoding at once; 0 = [server] max_batch_rows
    beam_size: int = 1
    max_audio_seconds: float = 7200.0
    warmup: bool = True
    # The vad strategy's speech detection and chunking (whisper_api/inference/vad.py explains
    # each default).
    vad_threshold: float = 0.5
    vad_min_silence_ms: int = 500
    vad_speech_pad_ms: int = 200
    vad_max_chunk_seconds: float = 30.0


@dataclass(frozen=True)
class DeploymentSettings:
    """Per-deployment decoding defaults; every deployment shares the one model."""

    name: str
    language: str | None = None
    prompt: str | None = None
    temperature: float | None = None
    # srt and vtt answers name each cue's speaker (VTT `<v A>`, SRT `A: `); diarized_json always does
    diarize: bool = False


@dataclass(frozen=True)
class DiarizationSettings:
    weights: str = ""  # the CAM++ weights file; empty: ~/.cache/whisper-api/speakers/
    max_speakers: int = 10


@dataclass(frozen=True)
class Settings:
    server: ServerSettings = field(default_factory=ServerSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    model: ModelSettings = field(default_factory=ModelSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    diarization: DiarizationSettings = field(default_factory=DiarizationSettings)
    deployments: dict[str, DeploymentSettings] = field(
        default_factory=lambda: {"whisper-1": DeploymentSettings("whisper-1")}
    )
    source: str = "<defaults>"


def config_path_from_environment(explicit: str | os.PathLike[str] | None = None) -> Path:
    """--config, else $WHISPER_API_CONFIG, else the shipped conf/whisper_api.ini."""
    if explicit:
        return Path(explicit)
    from_environment = os.environ.get(CONFIG_ENV_VARIABLE)
    return Path(from_environment) if from_environment else DEFAULT_CONFIG_PATH


def load_settings(path: str | os.PathLike[str]) -> Settings:
    path = Path(path)
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=("#", ";"))
    try:
        with open(path, encoding="utf-8-sig") as handle:
            parser.read_file(handle)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (configparser.Error, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: not a valid INI file: {error}") from None
    return _SettingsReader(parser, path).read()


class _SettingsReader:
    def __init__(self, parser: configparser.ConfigParser, path: Path) -> None:
        self.parser = parser
        self.path = path

    def read(self) -> Settings:
        known = {"server", "auth", "model", "metrics", "diarization"}
        for section in self.parser.sections():
            if section not in known and not section.startswith("deployment:"):
                raise ConfigError(f"{self.path}: [{section}]: unknown section")
        server = ServerSettings(
            host=self.text("server", "host", ServerSettings.host),
            port=self.number("server", "port", int, ServerSettings.port, 1, 65535),
            threads=self.number("server", "threads", int, ServerSettings.threads, 1, 256),
            max_upload_mb=self.number("server", "max_upload_mb", float, ServerSettings.max_upload_mb, 0.001, 4096),
            max_queue=self.number("server", "max_queue", int, ServerSettings.max_queue, 0, 10000),
            max_concurrent_jobs=self.number(
                "server", "max_concurrent_jobs", int, ServerSettings.max_concurrent_jobs, 1, 256
            ),
            max_batch_rows=self.auto_number("server", "max_batch_rows", 1, 256),
            channel_timeout_seconds=self.number(
                "server", "channel_timeout_seconds", int, ServerSettings.channel_timeout_seconds, 1, 86400
            ),
            connection_limit=self.number("server", "connection_limit", int, ServerSettings.connection_limit, 1, 100000),
            require_api_version=self.boolean("server", "require_api_version", ServerSettings.require_api_version),
            shutdown_grace_seconds=self.number(
                "server", "shutdown_grace_seconds", float, ServerSettings.shutdown_grace_seconds, 0, 3600
            ),
        )
        keys = self.text("auth", "api_keys", "")
        auth = AuthSettings(api_keys=tuple(key.strip() for key in keys.split(",") if key.strip()))
        model = ModelSettings(
            name=self.text("model", "name", ModelSettings.name, required=True),
            device=self.choice("model", "device", DEVICES, ModelSettings.device),
            dtype=self.choice("model", "dtype", DTYPES, ModelSettings.dtype),
            attention=self.choice("model", "attention", ATTENTION_IMPLEMENTATIONS, ModelSettings.attention),
            strategy=self.choice("model", "strategy", STRATEGIES, ModelSettings.strategy),
            batch_size=self.number("model", "batch_size", int, ModelSettings.batch_size, 1, 256),
            beam_size=self.number("model", "beam_size", int, ModelSettings.beam_size, 1, 16),
            max_audio_seconds=self.number(
                "model", "max_audio_seconds", float, ModelSettings.max_audio_seconds, 1, 86400
            ),
            warmup=self.boolean("model", "warmup", ModelSettings.warmup),
            vad_threshold=self.number("model", "vad_threshold", float, ModelSettings.vad_threshold, 0.01, 0.99),
            vad_min_silence_ms=self.number(
                "model", "vad_min_silence_ms", int, ModelSettings.vad_min_silence_ms, 0, 10000
            ),
            vad_speech_pad_ms=self.number("model", "vad_speech_pad_ms", int, ModelSettings.vad_speech_pad_ms, 0, 2000),
            vad_max_chunk_seconds=self.number(
                "model", "vad_max_chunk_seconds", float, ModelSettings.vad_max_chunk_seconds, 1, 30
            ),
        )
        metrics = MetricsSettings(
            require_api_key=self.boolean("metrics", "require_api_key", MetricsSettings.require_api_key)
        )
        diarization = DiarizationSettings(
            weights=self.text("diarization", "weights", DiarizationSettings.weights),
            max_speakers=self.number("diarization", "max_speakers", int, DiarizationSettings.max_speakers, 1, 20),
        )
        deployments = self.deployments()
        return Settings(
            server=server, auth=auth, model=model, metrics=metrics, diarization=diarization, deployments=deployments,
            source=str(self.path),
        )

    def deployments(self) -> dict[str, DeploymentSettings]:
        from .languages import normalize_language

        deployments: dict[str, DeploymentSettings] = {}
        for section in self.parser.sections():
            if not section.startswith("deployment:"):
                continue
            name = section.split(":", 1)[1].strip()
            if not name:
                raise ConfigError(f"{self.path}: [{section}]: deployment name is empty")
            language = self.text(section, "language", "") or None
            if language is not None and normalize_language(language) is None:
                raise self.error(section, "language", f"unknown language {language!r}")
            temperature_text = self.text(section, "temperature", "")
            temperature = None
            if temperature_text:
                temperature = self.number(section, "temperature", float, 0.0, 0.0, 1.0)
            deployments[name] = DeploymentSettings(
                name=name,
                language=normalize_language(language) if language else None,
                prompt=self.text(section, "prompt", "") or None,
                temperature=temperature,
                diarize=self.boolean(section, "diarize", False),
            )
        if not deployments:
            raise ConfigError(f"{self.path}: no [deployment:NAME] section: the server would answer to no deployment")
        return deployments

    def error(self, section: str, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.path}: [{section}] {key}: {problem}")

    def text(self, section: str, key: str, default: str, required: bool = False) -> str:
        value = self.parser.get(section, key, fallback=None)
        if value is None or not value.strip():
            if required:
                raise self.error(section, key, "is required")
            return default
        return value.strip()

    def number(
        self, section: str, key: str, kind: Callable[[str], T], default: T, minimum: float, maximum: float
    ) -> T:
        raw = self.text(section, key, "")
        if not raw:
            return default
        try:
            value = kind(raw)
        except ValueError:
            raise self.error(section, key, f"{raw!r} is not a {kind.__name__}") from None
        if not minimum <= value <= maximum:  # type: ignore[operator]
            raise self.error(section, key, f"{raw} is outside {minimum}..{maximum}")
        return value

    def auto_number(self, section: str, key: str, minimum: int, maximum: int) -> int:
        """A whole number, or `auto` (0: the engine picks by device)."""
        if self.text(section, key, "auto").lower() == "auto":
            return 0
        return self.number(section, key, int, 0, minimum, maximum)

    def boolean(self, section: str, key: str, default: bool) -> bool:
        raw = self.text(section, key, "")
        if not raw:
            return default
        states = configparser.ConfigParser.BOOLEAN_STATES
        if raw.lower() not in states:
            raise self.error(section, key, f"{raw!r} is not true/false")
        return states[raw.lower()]

    def choice(self, section: str, key: str, choices: tuple[str, ...], default: str) -> str:
        raw = self.text(section, key, default).lower()
        if raw not in choices:
            raise self.error(section, key, f"{raw!r} is not one of {', '.join(choices)}")
        return raw
