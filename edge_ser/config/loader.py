"""Loading YAML into :class:`~edge_ser.config.schema.Config`, with line numbers in errors.

Every error names the file, the line and the dotted key, e.g.::

    config/edge-ser.yaml:12: vad.frame_ms: Input should be 10, 20 or 30
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from edge_ser.config.schema import Config
from edge_ser.errors import ConfigError

log = logging.getLogger(__name__)


# --- loading with line numbers ---------------------------------------------------------------

MAX_ALIAS_USES = 100  # a config has no use for more; a YAML "billion laughs" file has millions


def _line_index(node: yaml.Node, path: tuple[Any, ...], out: dict[tuple[Any, ...], int],
                seen: set[int]) -> None:
    """Line of every key path; an alias (a node met before) is indexed once, not expanded."""
    out[path] = node.start_mark.line + 1
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first: dict[Any, int] = {}
        for key, value in node.value:
            k = key.value
            if k in first and k != "<<":  # YAML keeps the last one: a setting silently lost
                raise _DuplicateKey(key.start_mark.line + 1, path + (k,), first[k])
            first[k] = key.start_mark.line + 1
            out[path + (k,)] = key.start_mark.line + 1
            _line_index(value, path + (k,), out, seen)
            out[path + (k,)] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _line_index(item, path + (i,), out, seen)


class _DuplicateKey(Exception):
    def __init__(self, line: int, key: tuple[Any, ...], first: int) -> None:
        super().__init__(line, key, first)
        self.line, self.key, self.first = line, key, first


def _alias_uses(text: str) -> int:
    return sum(1 for t in yaml.scan(text, Loader=yaml.SafeLoader)
               if isinstance(t, yaml.AliasToken))


def _line_for(loc: tuple[Any, ...], lines: dict[tuple[Any, ...], int]) -> int | None:
    key = tuple(str(p) if not isinstance(p, int) else p for p in loc)
    while key:
        if key in lines:
            return lines[key]
        key = key[:-1]
    return lines.get((), None)


def parse_config(text: str, source: str = "<config>") -> Config:
    """Parse YAML text into a :class:`Config`; raise :class:`ConfigError` naming line and key."""
    try:
        if _alias_uses(text) > MAX_ALIAS_USES:
            raise ConfigError(f"{source}: more than {MAX_ALIAS_USES} YAML aliases (*name): "
                              "refused, a config needs few")
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except RecursionError as exc:
        raise ConfigError(f"{source}: YAML nested too deeply") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: invalid YAML: {problem}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}:1: the top level must be a mapping of sections")
    data = {k: {} if v is None else v for k, v in data.items()}  # a section left empty
    lines: dict[tuple[Any, ...], int] = {}
    if node is not None:
        try:
            _line_index(node, (), lines, set())
        except _DuplicateKey as dup:
            key = ".".join(str(p) for p in dup.key)
            raise ConfigError(f"{source}:{dup.line}: {key}: duplicate key (first at line "
                              f"{dup.first}; YAML would keep only the last)") from None
    try:
        cfg = Config.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = _key_of(err["loc"], err["msg"])
        line = _line_for(loc, lines)
        where = f"{source}:{line}" if line is not None else source
        key = ".".join(str(p) for p in loc) or "(top level)"
        msg = _plain(err["type"], err["msg"].removeprefix("Value error, "), err.get("input"))
        more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
        said = msg if msg.startswith(f"{key} ") else f"{key}: {msg}"  # a check naming its key
        raise ConfigError(f"{where}: {said}{more}") from exc
    cfg._origin = source
    cfg._lines = {".".join(str(p) for p in k): v for k, v in lines.items() if k}
    return cfg


def _key_of(loc: tuple[Any, ...], msg: str) -> tuple[Any, ...]:
    """The dotted key an error is about: pydantic's location without union-member names
    (``device.str``, ``tls.TlsConfig``); for a check across fields, the key its message names."""
    key = tuple(p for p in loc if not (isinstance(p, str) and ("[" in p or p[:1].isupper()
                                                                or p in _TYPE_NAMES)))
    first = msg.removeprefix("Value error, ").split(" ", 1)[0].strip("'")
    if "." in first and first.split(".")[:len(key)] == [str(p) for p in key]:
        key = tuple(first.split("."))  # e.g. "windows.hop_s must not exceed windows.length_s"
    return key


_TYPE_NAMES = frozenset({"str", "int", "float", "bool", "none", "list", "dict"})


def _plain(kind: str, msg: str, given: Any) -> str:
    """pydantic's message in a config's words."""
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "string_type" and isinstance(given, (int, float)) and not isinstance(given, bool):
        return f"{msg} (YAML read {given!r} as a number: quote it, '{given}')"
    if kind == "model_type":
        return "must be a section of keys (key: value lines under it)"
    if kind == "path_type":
        return "must be a file path"
    return msg


def load_config(path: str | Path | None) -> Config:
    """Load a YAML config file; ``None`` gives the built-in defaults.

    Relative paths inside the file (model, WAV, certificates, thermal zone) are resolved
    against the file's directory.
    """
    if path is None:
        return Config()
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read config ({exc.strerror or exc})") from exc
    except UnicodeDecodeError as exc:
        line = p.read_bytes()[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{p}:{line}: not UTF-8 text (byte {exc.start})") from exc
    cfg = parse_config(text, str(p))
    cfg.mqtt._config_dir = p.parent.resolve()  # password_file falls back to it
    return _resolve_paths(cfg, p.parent)


def _resolve_paths(cfg: Config, base: Path) -> Config:
    def fix(value: Path | None) -> Path | None:
        if value is None:
            return value
        value = value.expanduser()  # ~ is the (service) user's home
        return value if value.is_absolute() else (base / value).resolve()

    cfg.model.path = fix(cfg.model.path) or cfg.model.path
    if cfg.source.path is not None:
        cfg.source.path = fix(cfg.source.path)
    if cfg.mqtt.tls is not None:
        cfg.mqtt.tls.ca = fix(cfg.mqtt.tls.ca)
        cfg.mqtt.tls.certfile = fix(cfg.mqtt.tls.certfile)
        cfg.mqtt.tls.keyfile = fix(cfg.mqtt.tls.keyfile)
    cfg.budgets.thermal.zone = fix(cfg.budgets.thermal.zone) or cfg.budgets.thermal.zone
    pw = cfg.mqtt.password_file  # a plain relative name is looked up in $CREDENTIALS_DIRECTORY
    if pw is not None and str(pw).startswith("~"):
        cfg.mqtt.password_file = pw.expanduser()
    return cfg
