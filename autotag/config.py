"""config.yaml → validated, frozen dataclasses: read once at startup, then passed down.

Every key is checked against the dataclasses below: an unknown (misspelt) key, a wrong type or an
out-of-range value raises `ConfigError` naming the key's path and the fix; the CLI turns it into one
line and exit code 2. Relative paths resolve against the config file's folder.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import ipaddress
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from autotag.errors import AutotagError

HUB_HANDLE = "https://tfhub.dev/deepmind/mil-nce/s3d/1"
CONFIG_NAME = "config.yaml"
# Where the video signature runs (issue 14). auto: OpenVINO unless there is a GPU TensorFlow can
# use. On OpenVINO, TensorFlow only converts the model and embeds new text, in a child process.
RUNTIMES = ("auto", "tensorflow", "openvino")
# model.precision: auto (the fastest whose tags agree with f32 on this CPU: issue 34), OpenVINO's
# inference precision, or int8: the copy `autotag quantize` (or the daemon) validated
PRECISIONS = ("auto", "f32", "bf16", "int8")


class ConfigError(AutotagError):
    """A configuration problem; the message is one line naming the key and the fix."""


@dataclass(frozen=True)
class ModelConfig:
    handle: str = HUB_HANDLE  # hub URL or local SavedModel directory
    # windows per model call; on a CPU, 2 is as fast per window as 8 with half the memory
    # (python -m benchmarks, issue 8); a GPU wants more
    batch_size: int = 2
    threads: int = 0  # TensorFlow intra-op and OpenVINO threads; 0 = the runtime's choice (all)
    runtime: str = "auto"  # one of RUNTIMES: where the video signature runs
    # OpenVINO's arithmetic. auto: bf16 on CPUs with AVX-512 BF16 or AMX once it agreed with
    # f32 on your first windows (3.7x f32 on a Sapphire Rapids), an INT8 copy validated on your
    # clips where there is one, else f32 (TensorFlow's embeddings to float error) (issue 34)
    precision: str = "auto"
    # the daemon makes that INT8 copy by itself, at idle priority, where the CPU gains from it
    auto_int8: bool = True
    # an idle daemon releases the compiled video model after this long with nothing embedded
    # and loads it again (from the cached IR) for the next clip; 0 never. 300: Immich's model TTL
    idle_unload_seconds: float = 300.0


@dataclass(frozen=True)
class VocabEntry:
    """A tag: the prompts whose text embeddings are averaged for it (a prompt ensemble), and
    the example clips whose stored embeddings make a vector for it (issue 21; vocabulary.py
    says how the two are combined). At least one of the two is non-empty."""

    label: str
    prompts: tuple[str, ...]
    examples: tuple[Path, ...] = ()  # example clips, resolved; each an existing file


@dataclass(frozen=True)
class TaggingConfig:
    top_k: int = 3
    min_score: float = 3.0  # raw dot product below which a tag is not given
    temperature: float = 1.0  # softmax temperature for confidences
    thresholds: dict[str, float] = field(default_factory=dict)  # per-tag min_score (calibrate)


@dataclass(frozen=True)
class SamplingConfig:
    max_windows: int = 8  # windows per clip, spread over its whole length
    max_pixels: int = 20_000_000  # larger frames (past 6K, 6144×3240) are refused: 8K's are
    decode_workers: int = 2  # threads decoding clips while the model runs
    decode_timeout: float = 120.0  # seconds one clip may take to decode before it is failed
    skip_nonref_frames: bool = True  # frames no sample shows and nothing refers to: not decoded
    # and with it, none that nothing refers to, shown or not: a sample on one takes the frame
    # before it (1-2 frames earlier); false: every sample is exactly the frame on screen
    reference_frames_only: bool = True


@dataclass(frozen=True)
class OutputsConfig:
    sidecars: bool = True  # <clip>.autotag.json beside the clip
    sidecar_dir: Path | None = None  # write sidecars to this mirror tree instead
    log: Path | None = Path("autotag-matches.jsonl")  # top-match log (JSON Lines); null = off
    previews: Path | None = Path("previews")  # annotated preview JPEGs; null = off
    xmp: bool = False  # write/merge XMP sidecars
    xmp_root: str = "Activity"  # hierarchy root: Activity|skiing, Activity/skiing
    nfo: bool = False  # write/merge Kodi-style NFO <tag> elements

    @property
    def own_folders(self) -> list[Path]:
        """Folders only autotag writes to: never scanned or watched for clips."""
        return [p for p in (self.previews, self.sidecar_dir) if p]


@dataclass(frozen=True)
class HooksConfig:
    on_tagged: str | None = None  # a shell command run after each clip is tagged
    timeout: float = 30.0  # seconds before the hook is killed


@dataclass(frozen=True)
class WatchConfig:
    paths: tuple[Path, ...] = ()  # folders to watch, besides those on the command line
    stability_seconds: float = 5.0  # unchanged size and mtime for this long = completely written
    rescan_seconds: float = 300.0  # full rescan as a safety net for lost events; 0 = off
    polling: bool = False  # poll instead of inotify (network filesystems)
    polling_seconds: float = 30.0
    ignore: tuple[str, ...] = ()  # extra glob patterns, added to the built-in ones
    follow_symlinks_out: bool = False  # tag and serve clips behind symlinks out of the folders


def default_state_path() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "autotag" / "state.sqlite3"


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "autotag"


@dataclass(frozen=True)
class StateConfig:
    path: Path | None = None  # the SQLite state store; None = default_state_path()

    @property
    def store_path(self) -> Path:
        return self.path or default_state_path()


DEFAULT_LISTEN = "127.0.0.1:8765"


@dataclass(frozen=True)
class ServeConfig:
    # the web app's address; None: the daemon does not serve (autotag serve uses DEFAULT_LISTEN)
    listen: str | None = None
    token_file: Path | None = None  # a file holding the access token; needed off loopback
    hosts: tuple[str, ...] = ()  # Host names the app answers to besides loopback and IPs
    root_path: str | None = None  # the path prefix a reverse proxy serves the app under, e.g. /autotag
    trusted_proxies: tuple[str, ...] = ()  # proxies whose X-Forwarded-For is believed
    max_connections: int = 64  # connections served at once (uvicorn's limit_concurrency)
    max_previews: int = 2  # web previews encoded at once


@dataclass(frozen=True)
class MqttConfig:
    """MQTT events and Home Assistant discovery (issue 35; autotag/mqtt.py)."""

    host: str | None = None  # the broker; None = off
    port: int = 1883
    username: str | None = None
    password_file: Path | None = None  # a file holding the password: never in config.yaml
    tls: bool | Path = False  # true: TLS with the system's CAs; a path: TLS with this CA file
    topic_prefix: str = "autotag"
    discovery_prefix: str | None = "homeassistant"  # None = no Home Assistant discovery

    @property
    def enabled(self) -> bool:
        return self.host is not None

    def password(self) -> str | None:
        """The password file's first line, read when needed (a rotated password is picked up
        at the next connection); ConfigError naming the key when it cannot be read."""
        if self.password_file is None:
            return None
        try:
            text = self.password_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or "not UTF-8 text"
            raise ConfigError(f"'mqtt.password_file': cannot read {self.password_file} "
                              f"({reason}); point it at a readable file holding the broker's "
                              "password") from None
        lines = text.splitlines()
        if not lines or not lines[0]:
            raise ConfigError(f"'mqtt.password_file': {self.password_file} is empty; write the "
                              "broker's password on its first line")
        return lines[0]


@dataclass(frozen=True)
class Config:
    vocabulary: tuple[VocabEntry, ...]
    model: ModelConfig = field(default_factory=ModelConfig)
    tagging: TaggingConfig = field(default_factory=TaggingConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    outputs: OutputsConfig = field(default_factory=OutputsConfig)
    hooks: HooksConfig = field(default_factory=HooksConfig)
    watch: WatchConfig = field(default_factory=WatchConfig)
    state: StateConfig = field(default_factory=StateConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    source: Path | None = None  # the file this was read from

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(e.label for e in self.vocabulary)


# Characters a tag name cannot hold: Lightroom's (|) and digiKam's (/) keyword hierarchy.
HIERARCHY_SEPARATORS = frozenset("|/")

# Keys whose value must be > 0 (or >= 0 where 0 means "off").
_POSITIVE = {"model.batch_size", "tagging.top_k", "tagging.temperature", "sampling.max_windows",
             "sampling.max_pixels", "sampling.decode_workers", "sampling.decode_timeout",
             "watch.polling_seconds", "hooks.timeout", "serve.max_connections",
             "serve.max_previews"}
_NON_NEGATIVE = {"model.threads", "model.idle_unload_seconds", "watch.stability_seconds",
                 "watch.rescan_seconds"}
# Keys whose value must be one of a few words.
_CHOICES = {"model.runtime": RUNTIMES, "model.precision": PRECISIONS}


def find_config(explicit: Path | None) -> Path:
    """The config file to use: --config, else ./config.yaml, else $XDG_CONFIG_HOME/autotag/."""
    if explicit is not None:
        if not explicit.is_file():
            raise ConfigError(f"config file {explicit} not found; pass an existing file to --config")
        return explicit
    candidates = [Path.cwd() / CONFIG_NAME, user_config_path()]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    looked = ", ".join(str(c) for c in candidates)
    raise ConfigError(f"no config file found (looked in {looked}); run 'autotag init' to "
                      "write the default one, or pass --config PATH")


def default_config_text() -> str:
    """The documented default config (the repository's config.yaml, shipped in the package)."""
    from importlib.resources import files

    return files("autotag").joinpath("config.yaml").read_text(encoding="utf-8")


def user_config_path() -> Path:
    """$XDG_CONFIG_HOME/autotag/config.yaml: where `autotag init` writes by default."""
    xdg = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return xdg / "autotag" / CONFIG_NAME


def load_config(path: Path) -> Config:
    """Read and validate one config file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}; check the path and "
                          "its permissions") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text (byte {exc.start}); save it as UTF-8") \
            from None
    return parse_config(text, base=path.resolve().parent, source=path)


def parse_config(text: str, base: Path, source: Path | None = None) -> Config:
    """Validate YAML text; relative paths resolve against `base`."""
    where = source or "config"
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{where}: broken YAML{at}: {problem}; fix the syntax there") from None
    except RecursionError:  # PyYAML composes recursively: '[[[[...' thousands deep
        raise ConfigError(f"{where}: the YAML is nested too deeply; fix the syntax") from None
    except (ValueError, OverflowError) as exc:  # PyYAML's constructors: 2001-13-45, 5000 digits
        raise ConfigError(f"{where}: a value cannot be read ({str(exc)[:80]}); fix it") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: the top level must be a mapping of sections (model:, "
                          f"vocabulary:, ...), not {type(raw).__name__}")
    if "vocabulary" not in raw:
        raise ConfigError(f"{where}: vocabulary is missing; add a list of tags, e.g. "
                          "'vocabulary: [skiing, biking]'")
    try:
        config = _validated(raw, base, source)
    except ConfigError as exc:  # name the file: which config was read is not always obvious
        raise ConfigError(f"{source}: {exc}" if source else str(exc)) from None
    return config


def _validated(raw: dict, base: Path, source: Path | None) -> Config:
    values: dict[str, Any] = {}
    for f in dataclasses.fields(Config):
        if f.name == "source":
            continue
        if f.name == "vocabulary":
            values[f.name] = _vocabulary(raw[f.name], base)
        else:  # every section, so that its default paths resolve against base too
            values[f.name] = _section(f.name, f.type, raw.get(f.name), base)
    _reject_unknown("", raw, {f.name for f in dataclasses.fields(Config) if f.name != "source"})
    if "model" in values:
        values["model"] = _resolve_handle(values["model"], base)
    config = Config(source=source, **values)
    _check_thresholds(config)
    _check_runtime(config.model)
    _check_serve(config.serve)
    _check_mqtt(config.mqtt)
    return config


def parse_listen(value: str, key: str = "serve.listen") -> tuple[str, int]:
    """'HOST:PORT' ('[::1]:8765' for IPv6) → (host, port); ConfigError naming the key."""
    host, sep, port = value.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:  # 0: the OS picks
        raise ConfigError(f"'{key}' must be HOST:PORT, e.g. {DEFAULT_LISTEN} (or [::1]:8765), "
                          f"got {value!r}")
    return host, int(port)


def _check_serve(serve: ServeConfig) -> None:
    if serve.listen is not None:
        parse_listen(serve.listen)
    if serve.root_path and (not serve.root_path.startswith("/") or serve.root_path == "/"
                            or serve.root_path.endswith("/") or "//" in serve.root_path):
        raise ConfigError(f"'serve.root_path' must be a path like /autotag (a leading slash, no "
                          f"trailing one), got {serve.root_path!r}")
    for proxy in serve.trusted_proxies:
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            raise ConfigError(f"'serve.trusted_proxies' holds {proxy!r}, which is not an IP "
                              "address or network; give the proxy's address, e.g. 127.0.0.1"
                              ) from None


# MQTT topic levels: a wildcard or an empty level would publish where no consumer looks
MQTT_TOPIC_KEYS = ("topic_prefix", "discovery_prefix")


def _check_mqtt(mqtt: MqttConfig) -> None:
    """The port's range, prefixes usable as topics, the CA file there, a password that can
    be read now (a startup error, not a warning at the first clip)."""
    if not 0 < mqtt.port < 65536:
        raise ConfigError(f"'mqtt.port' must be 1..65535, got {mqtt.port}")
    for key in MQTT_TOPIC_KEYS:
        value = getattr(mqtt, key)
        if value is not None and (set(value) & set("+#\0") or value.startswith("/")
                                  or value.endswith("/") or "//" in value):
            raise ConfigError(f"'mqtt.{key}' must be a topic like autotag or home/autotag (no "
                              f"+, #, leading, trailing or double /), got {value!r}")
    if isinstance(mqtt.tls, Path) and not mqtt.tls.is_file():
        raise ConfigError(f"'mqtt.tls': the CA file {mqtt.tls} does not exist; set it to the "
                          "CA certificate that signed the broker's, true for the system's CAs, "
                          "or false")
    if mqtt.password_file is not None and mqtt.username is None:
        raise ConfigError("'mqtt.password_file' is set but 'mqtt.username' is not; MQTT sends a "
                          "password only with a user name")
    mqtt.password()


OPENVINO_HINT = "pip install 'autotag[openvino]'"


def openvino_installed() -> bool:
    """OpenVINO can be imported (looked up, not imported: start-up stays fast). The one check,
    here at the bottom because configuration validates model.runtime with it; the runtimes
    ask it too."""
    try:
        return importlib.util.find_spec("openvino") is not None
    except (ImportError, ValueError):  # a broken install, a stub in sys.modules
        return False


def _check_runtime(model: ModelConfig) -> None:
    """model.runtime: openvino needs OpenVINO installed, said at start even when nothing is
    to be tagged (the model loads lazily). auto without it is TensorFlow: what auto means."""
    if model.runtime == "openvino" and not openvino_installed():
        raise ConfigError(f"'model.runtime' is openvino but OpenVINO is not installed; run "
                          f"{OPENVINO_HINT}, or set model.runtime: auto")


def _resolve_handle(model: ModelConfig, base: Path) -> ModelConfig:
    """A handle is a URL (kept) or a SavedModel directory (resolved, and it must exist)."""
    if "://" in model.handle:
        return model
    path = _path("model.handle", model.handle, base)
    if not path.is_dir():
        raise ConfigError(f"'model.handle': {path} is not a directory; set it to a SavedModel "
                          f"folder or to the hub handle {HUB_HANDLE}")
    return dataclasses.replace(model, handle=str(path))


def _reject_unknown(prefix: str, raw: dict, known: set[str]) -> None:
    for key in raw:
        if key not in known:
            where = f"{prefix}{key}"
            hint = ", ".join(sorted(known))
            raise ConfigError(f"unknown key {where!r}; known keys here: {hint}")


def _section(name: str, type_name: str, raw: Any, base: Path) -> Any:
    cls = _TYPES[type_name]
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"'{name}' must be a mapping of keys, got {_kind(raw)}")
    hints = typing.get_type_hints(cls)
    _reject_unknown(f"{name}.", raw, set(hints))
    values = {key: _value(f"{name}.{key}", hints[key], value, base) for key, value in raw.items()}
    for f in dataclasses.fields(cls):  # default paths (outputs.log, outputs.previews) too
        if f.name not in values and isinstance(f.default, Path):
            values[f.name] = _path(f"{name}.{f.name}", str(f.default), base)
    return cls(**values)


def _value(key: str, hint: Any, value: Any, base: Path) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        if bool in args and isinstance(value, bool):  # mqtt.tls: false, true or a path
            return value
        (inner,) = [a for a in args if a not in (type(None), bool)]
        return _value(key, inner, value, base)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"'{key}' must be true or false, got {_kind(value)}")
        return value
    if hint is int or hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (
                hint is int and not isinstance(value, int)):
            raise ConfigError(f"'{key}' must be a {'whole ' if hint is int else ''}number, "
                              f"got {_kind(value)}")
        if isinstance(value, float) and not math.isfinite(value):  # .nan, .inf: meaningless
            raise ConfigError(f"'{key}' must be a finite number, got {value}")
        if hint is float and abs(value) > 1e300:  # float() of a 400-digit int overflows
            raise ConfigError(f"'{key}' is too large; use a number below 1e300")
        if key in _POSITIVE and value <= 0:
            raise ConfigError(f"'{key}' must be greater than 0, got {value}")
        if key in _NON_NEGATIVE and value < 0:
            raise ConfigError(f"'{key}' must be 0 or more, got {value}")
        return hint(value)
    if hint is str:
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"'{key}' must be a non-empty string, got {_kind(value)}")
        if key in _CHOICES and value not in _CHOICES[key]:
            raise ConfigError(f"'{key}' must be one of {', '.join(_CHOICES[key])}, got "
                              f"{_kind(value)}")
        return value
    if hint is Path:
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"'{key}' must be a path, got {_kind(value)}")
        return _path(key, value, base)
    if origin is tuple:
        if not isinstance(value, list):
            raise ConfigError(f"'{key}' must be a list, got {_kind(value)}")
        return tuple(_value(f"{key}[{i}]", args[0], v, base) for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"'{key}' must be a mapping, got {_kind(value)}")
        return {str(k): _value(f"{key}.{k}", args[1], v, base) for k, v in value.items()}
    raise AssertionError(f"no validator for {key}: {hint}")  # a programming error, not the user's


def _path(key: str, value: str, base: Path) -> Path:
    """`value` (~ expanded) resolved against `base`; a name that cannot be a path is the
    user's error, not a crash."""
    try:
        return (base / Path(value).expanduser()).resolve()
    except RuntimeError:  # Path.expanduser: '~name' for a user that does not exist
        raise ConfigError(f"'{key}': {value.split('/')[0]!r} is not a known user's home; "
                          "write the folder out in full") from None
    except (ValueError, OSError) as exc:  # an embedded NUL; a symlink loop
        raise ConfigError(f"'{key}': {value!r} is not a usable path ({exc}); fix it") from None


# The keys of a tag's mapping form: '- cooking: {prompts: [...], examples: [clip.mp4, ...]}'.
ENTRY_KEYS = ("prompts", "examples")


def _vocabulary(raw: Any, base: Path) -> tuple[VocabEntry, ...]:
    if not isinstance(raw, list) or not raw:
        raise ConfigError("'vocabulary' must be a non-empty list of tags, e.g. "
                          "'vocabulary: [skiing, {biking: [riding a bike, mountain biking]}]'")
    entries: list[VocabEntry] = []
    for i, item in enumerate(raw):
        key = f"vocabulary[{i}]"
        if isinstance(item, str) and item.strip():
            entries.append(VocabEntry(item.strip(), (item.strip(),)))
        elif isinstance(item, dict) and len(item) == 1:
            ((label, value),) = item.items()
            if not isinstance(label, str) or not label.strip():
                raise ConfigError(f"'{key}' needs a tag name as its key")
            entries.append(_entry(key, label.strip(), value, base))
        else:
            raise ConfigError(f"'{key}' must be a tag name, 'tag: [prompt, ...]' or "
                              f"'tag: {{examples: [clip, ...]}}', got {_kind(item)}")
    seen: set[str] = set()
    for entry in entries:
        if not all(x.isprintable() for x in (entry.label, *entry.prompts)):
            # a control character cannot be written into an XMP or NFO sidecar (XML 1.0)
            raise ConfigError(f"'vocabulary': the tag {entry.label!r} holds a control "
                              "character; remove it")
        if HIERARCHY_SEPARATORS & set(entry.label):
            raise ConfigError(f"'vocabulary': the tag {entry.label!r} holds '|' or '/', which "
                              "media managers read as a keyword hierarchy; name it without them "
                              "(its prompts may hold anything)")
        folded = entry.label.casefold()
        if folded in seen:
            raise ConfigError(f"'vocabulary' lists the tag '{entry.label}' twice; "
                              "merge its prompts into one entry")
        seen.add(folded)
    return tuple(entries)


def _entry(key: str, label: str, value: Any, base: Path) -> VocabEntry:
    """'tag: prompts' (a string or a list) or 'tag: {prompts: ..., examples: ...}'."""
    if not isinstance(value, dict):
        return VocabEntry(label, _prompts(key, label, value))
    unknown = [k for k in value if k not in ENTRY_KEYS]
    if unknown:
        raise ConfigError(f"'{key}' ({label!r}): unknown key {str(unknown[0])!r}; a tag's "
                          f"mapping holds {' and/or '.join(ENTRY_KEYS)}")
    prompts = _prompts(key, label, value["prompts"]) if "prompts" in value else ()
    examples = _examples(key, label, value.get("examples"), base)
    if not prompts and not examples:
        raise ConfigError(f"'{key}' ({label!r}) needs prompts or examples, e.g. "
                          f"'{label}: {{examples: [clips/one.mp4, clips/two.mp4]}}'")
    return VocabEntry(label, prompts, examples)


def _prompts(key: str, label: str, prompts: Any) -> tuple[str, ...]:
    if isinstance(prompts, str):
        prompts = [prompts]
    if (not isinstance(prompts, list) or not prompts
            or not all(isinstance(p, str) and p.strip() for p in prompts)):
        raise ConfigError(f"'{key}' ({label!r}) must map to a non-empty list of prompt "
                          "strings, e.g. 'biking: [riding a bike, mountain biking]'")
    return tuple(p.strip() for p in prompts)


def _examples(key: str, label: str, examples: Any, base: Path) -> tuple[Path, ...]:
    """Example clips: paths resolved against the config's folder; each must be a file now
    (a typo would otherwise surface as a tag that never matches)."""
    if examples is None:
        return ()
    if isinstance(examples, str):
        examples = [examples]
    if not isinstance(examples, list) or not all(isinstance(e, str) and e.strip()
                                                 for e in examples):
        raise ConfigError(f"'{key}' ({label!r}): examples must be a list of clip paths, e.g. "
                          f"'examples: [clips/one.mp4, clips/two.mp4]'")
    paths = []
    for j, example in enumerate(examples):
        path = _path(f"{key}.examples[{j}]", example.strip(), base)
        if not path.is_file():
            raise ConfigError(f"'{key}' ({label!r}): example {example.strip()!r} is not a file "
                              f"({path}); fix the path (relative paths resolve against the "
                              "config file's folder) or remove it")
        paths.append(path)
    return tuple(paths)


def _check_thresholds(config: Config) -> None:
    unknown = set(config.tagging.thresholds) - set(config.labels)
    if unknown:
        raise ConfigError(f"'tagging.thresholds' names {min(unknown)!r}, which is not in "
                          "the vocabulary; remove it or add the tag")


def _kind(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    return f"{type(value).__name__} {value!r}"[:80]


_TYPES = {c.__name__: c for c in (ModelConfig, TaggingConfig, SamplingConfig, OutputsConfig,
                                  HooksConfig, WatchConfig, StateConfig, ServeConfig,
                                  MqttConfig)}
