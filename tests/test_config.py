"""Config files: errors name file, line and key; the example documents every option and passes
``edge-ser check-config``."""

from __future__ import annotations

import re
import subprocess
import sys
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from edge_ser.cli import main
from edge_ser.config import Config, load_config
from edge_ser.errors import ConfigError
from edge_ser.sources.devices import pyaudio_installed

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "config" / "edge-ser.yaml"
VOICE_NOTE = REPO / "examples" / "voice-note.wav"


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "edge-ser.yaml"
    p.write_text(text)
    return p


def _check_config(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge_ser", "check-config", str(path)],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    ("text", "line", "key", "why"),
    [
        ("source:\n  type: file\n  path: x.wav\n  colour: red\n", 4, "source.colour",
         "unknown key"),
        ("vad:\n  aggressiveness: 2\n  hangover_ms: lots\n", 3, "vad.hangover_ms", "integer"),
        ("source:\n  type: microphone\n", 2, "source.type", "'mic', 'file' or 'stdin'"),
        ("mqtt:\n  qos: 3\n", 2, "mqtt.qos", "0, 1 or 2"),
        ("budgets:\n  thermal:\n    soft_c: 90\n    hard_c: 80\n", 3, "budgets.thermal.soft_c",
         "must be below hard_c"),
        ("budgets:\n  memory:\n    rss_mb: -1\n", 3, "budgets.memory.rss_mb", "greater than 0"),
        ("source:\n  type: file\n", 2, "source.type", "needs source.path"),
        ("source:\n  type: mic\n  path: x.wav\n", 3, "source.path",
         "only read by source.type 'file', not 'mic'"),
        ("source:\n  type: file\n  path: x.wav\n  device: USB\n", 4, "source.device",
         "only read by source.type 'mic', not 'file'"),
        ("windows:\n  length_s: 4\n  hop_s: 6\n", 3, "windows.hop_s", "must not exceed"),
        ("mqtt:\n  reconnect_max_s: 5\n  reconnect_min_s: 9\n", 3, "mqtt.reconnect_min_s",
         "must not exceed mqtt.reconnect_max_s"),
        ("mqtt:\n  reconnect_min_s: 0.5\n", 2, "mqtt.reconnect_min_s", "valid integer"),
        ("source:\n  device: [1, 2]\n", 2, "source.device", "valid string"),
        ("mqtt:\n  stop_flush_s: 30\n", 2, "mqtt.stop_flush_s", "less than or equal to 9"),
        ("mqtt:\n  connect_wait_s: .inf\n", 2, "mqtt.connect_wait_s", "finite number"),
        ("budgets:\n  thermal:\n    soft_c: .nan\n", 3, "budgets.thermal.soft_c", "finite"),
        ("mqtt:\n  discovery_prefix: 'ha/+'\n", 2, "mqtt.discovery_prefix", "pattern"),
        ("mqtt:\n  host: 'broker:1883'\n", 2, "mqtt.host", "without ':port'"),
        ("mqtt:\n  host: ''\n", 2, "mqtt.host", "at least 1 character"),
        ("mqtt:\n  host: h\n  password_file: pw\n", 3, "mqtt.password_file",
         "mqtt.username is not"),
        ("mqtt:\n  tls:\n    keyfile: k.pem\n", 3, "mqtt.tls.keyfile", "certfile is not"),
        ("windows:\n  hop_s: 0.001\n", 2, "windows.hop_s", "greater than or equal to 0.5"),
        ("budgets:\n  duty_cycle: 1e-300\n", 2, "budgets.duty_cycle", "0.05"),
        ("logging:\n  level: LOUD\n", 2, "logging.level", "DEBUG"),
        ("source:\n  queue_s: 0.5\n  chunk_ms: 1000\n", 2, "source.queue_s",
         "at least two source.chunk_ms blocks"),
        ("mqtt:\n  connect_wait_s: 1e300\n", 2, "mqtt.connect_wait_s", "less than or equal"),
        ("vad:\n  max_utterance_s: 0.5\n", 2, "vad.max_utterance_s", "greater than or equal"),
        ("mqtt:\n  host: a\n  port: 1883\n  host: null\n", 4, "mqtt.host",
         "duplicate key (first at line 2"),
        ("vad: {}\nmqtt: {}\nvad:\n  aggressiveness: 3\n", 3, "vad", "duplicate key"),
        ("source:\n  device: no\n", 2, "source.device", "YAML read this as a boolean"),
        ("mqtt:\n  port: true\n", 2, "mqtt.port", "YAML read this as a boolean"),
        ("mqtt:\n  host: 'mqtt://broker'\n", 2, "mqtt.host", "not a URL"),
        ("mqtt:\n  host: ' '\n", 2, "mqtt.host", "without spaces"),
        ("mqtt:\n  prefix: \"a\\0b\"\n", 2, "mqtt.prefix", "pattern"),
        ("mqtt:\n  username: 1234\n", 2, "mqtt.username", "quote it, '1234'"),
        ("model:\n  path: null\n", 2, "model.path", "must be a file path"),
        ("source: 3\n", 1, "source", "must be a section of keys"),
        ("mqtt:\n  buffer_events: 100000000000000000000\n", 2, "mqtt.buffer_events",
         "less than or equal to 100000"),
        ("budgets:\n  memory:\n    rss_mb: 100\nmqtt:\n  buffer_events: 50000\n", 5,
         "mqtt.buffer_events", "more than half of budgets.memory.rss_mb (100 MiB): at most 34133"),
    ],
)
def test_errors_name_file_line_and_key(
    tmp_path: Path, text: str, line: int, key: str, why: str
) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    msg = str(info.value)
    assert re.match(rf"{re.escape(f'{path}:{line}: {key}')}[: ]", msg), msg  # "key: why"/"key why"
    assert why in msg and "\n" not in msg


def test_hostile_yaml_is_one_line_error_not_a_hang(tmp_path: Path) -> None:
    """Alias bombs, self-referencing aliases, deep nesting and non-UTF-8 bytes."""
    levels = ['a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    levels += [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 10)}]"
               for i in range(12)]  # 10**13 leaves once expanded
    cases = [
        ("\n".join(levels) + "\n", "more than 100 YAML aliases"),
        ("vad: &v {x: *v}\n", ":1: vad.x: unknown key"),
        ("a: " + "[" * 2000 + "]" * 2000 + "\n", "YAML nested too deeply"),
    ]
    for text, why in cases:
        path = _write(tmp_path, text)
        with pytest.raises(ConfigError) as info:
            load_config(path)
        assert why in str(info.value) and "\n" not in str(info.value)
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"source:\n  type: mic\n  device: \"\xe9cho\"\n")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}:3: not UTF-8 text"):
        load_config(path)


def test_bad_yaml_names_file_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "source:\n  type: file\n  path: [unclosed\nvad:\n")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}:\d+: invalid YAML"):
        load_config(path)


def test_missing_config_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "absent.yaml")


def test_relative_paths_resolve_against_the_config_folder(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "c.yaml"
    path.write_text("source:\n  type: file\n  path: ../a.wav\nmodel:\n  path: m.onnx\n")
    cfg = load_config(path)
    assert cfg.source.path == tmp_path / "a.wav"
    assert cfg.model.path == tmp_path / "sub" / "m.onnx"


# --- the example config --------------------------------------------------------------------

def _field_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    out = []
    for name, field in model.model_fields.items():
        out.append(prefix + name)
        args = typing.get_args(field.annotation) or (field.annotation,)
        for arg in args:
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                out += _field_paths(arg, f"{prefix}{name}.")
    return out


def _documented_paths(text: str) -> set[str]:
    """Keys of the YAML, active or shown commented out as ``# key: value`` at their indent."""
    found: set[str] = set()
    stack: list[tuple[int, str]] = []
    for raw in text.splitlines():
        m = re.match(r"^( *)(?:# )?( *)([a-z_]+):(?: |$)", raw)
        if not m:
            continue
        indent = len(m.group(1)) + len(m.group(2))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, m.group(3)))
        found.add(".".join(k for _, k in stack))
    return found


def test_example_documents_every_option() -> None:
    text = EXAMPLE.read_text()
    documented = _documented_paths(text)
    missing = [p for p in _field_paths(Config) if p not in documented]
    assert not missing, f"config/edge-ser.yaml lacks {missing}"
    unknown = sorted(p for p in documented if p not in set(_field_paths(Config)))
    assert not unknown, f"config/edge-ser.yaml documents unknown keys {unknown}"


def test_example_values_are_the_defaults_except_the_model_path() -> None:
    cfg = load_config(EXAMPLE)
    defaults = Config().model_dump()
    got = cfg.model_dump()
    shipped = REPO / "models" / "edge-ser-whisper-tiny.int8.onnx"
    assert cfg.model.path.resolve() == shipped.resolve()
    got["model"].pop("path")
    defaults["model"].pop("path")
    assert got == defaults


def test_default_capture_block_is_several_whole_vad_frames() -> None:
    # one wake-up per block: several frames each (idle CPU), and no remainder to carry over
    cfg = Config()
    assert cfg.source.chunk_ms % cfg.vad.frame_ms == 0
    assert cfg.source.chunk_ms >= 3 * cfg.vad.frame_ms


@pytest.mark.skipif(not pyaudio_installed(), reason="the example config's source is the mic: "
                    "needs PyAudio (bash scripts/setup mic; scripts/test installs it where "
                    "portaudio19-dev is)")
def test_example_passes_check_config(shipped_model: Path) -> None:
    proc = _check_config(EXAMPLE)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_check_config_refuses_missing_files(
    tmp_path: Path, tiny_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = _write(tmp_path, f"source:\n  type: file\n  path: {VOICE_NOTE}\n"
                            f"model:\n  path: {tiny_model}\n")
    assert main(["check-config", str(good)]) == 0
    assert capsys.readouterr().out.strip() == "ok"
    for text, key in [
        (f"source:\n  type: file\n  path: gone.wav\nmodel:\n  path: {tiny_model}\n",
         "source.path"),
        ("model:\n  path: gone.onnx\n", "model.path"),
        (f"model:\n  path: {tiny_model}\nmqtt:\n  host: localhost\n  username: u\n"
         "  password_file: pw\n", "mqtt.password_file"),
    ]:
        assert main(["check-config", str(_write(tmp_path, text))]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("edge-ser check-config: error: ")
        assert key in lines[0] and "no such file" in lines[0]
    # read as the daemon would: a WAV that is not one, an empty model
    (tmp_path / "song.wav").write_bytes(b"ID3\x03\x00" + b"\xff\xfb" * 500)  # an MP3
    (tmp_path / "empty.onnx").write_bytes(b"")
    for text, want in [
        (f"source:\n  type: file\n  path: song.wav\nmodel:\n  path: {tiny_model}\n",
         ":3: source.path: "),
        ("model:\n  path: empty.onnx\n", ":2: model.path: "),
    ]:
        assert main(["check-config", str(_write(tmp_path, text))]) == 2
        err = capsys.readouterr().err.strip()
        assert want in err and ("not a readable WAV" in err or "is empty" in err), err
    # the model loaded and checked against the contract, as the daemon does before it runs
    (tmp_path / "corrupt.onnx").write_bytes(bytes(range(256)) * 40)  # a broken download
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "other",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    onnx.save(helper.make_model(graph), tmp_path / "other.onnx")  # loads, another contract
    for name, want in [("corrupt.onnx", "not a loadable ONNX model ("),
                       ("other.onnx", "other.onnx: ")]:
        assert main(["check-config", str(_write(tmp_path, f"model:\n  path: {name}\n"))]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and ":2: model.path: " in err and want in err, err
    # an empty path resolves to the config's folder: say "folder", not "no such file"
    assert main(["check-config", str(_write(tmp_path, "model:\n  path: ''\n"))]) == 2
    err = capsys.readouterr().err.strip()
    assert ":2: model.path: " in err and "is a folder, not a file" in err, err
    # a window longer than the model's: the model would hear only its first 8 s
    long = _write(tmp_path, f"model:\n  path: {tiny_model}\nwindows:\n  length_s: 10\n"
                            "  hop_s: 10\n")
    assert main(["check-config", str(long)]) == 2
    err = capsys.readouterr().err.strip()
    assert f"{long}:4: windows.length_s: 10 s is longer than the 8-s window of model" in err, err
    # loaded as the daemon would: a CA file that is no certificate is refused at its line
    (tmp_path / "ca.pem").write_text("not a certificate\n")
    bad_ca = _write(tmp_path, f"model:\n  path: {tiny_model}\nmqtt:\n  host: localhost\n"
                              "  tls:\n    ca: ca.pem\n")
    assert main(["check-config", str(bad_ca)]) == 2
    err = capsys.readouterr().err
    assert f"{bad_ca}:5: mqtt.tls: cannot load the certificates or key" in err


def test_check_config_refuses_a_mic_without_pyaudio(
    tmp_path: Path, tiny_model: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import edge_ser.sources.devices as devices

    cfg = _write(tmp_path, f"source:\n  type: mic\nmodel:\n  path: {tiny_model}\n")
    monkeypatch.setattr(devices, "pyaudio_installed", lambda: False)
    assert main(["check-config", str(cfg)]) == 2
    err = capsys.readouterr().err.strip()
    assert f"{cfg}:2: source.type: mic, but PyAudio is not installed" in err, err
    monkeypatch.setattr(devices, "pyaudio_installed", lambda: True)
    assert main(["check-config", str(cfg)]) == 0


def test_relative_password_file_is_found_beside_the_config(
    tmp_path: Path, tiny_model: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """/etc/edge-ser/edge-ser.yaml with ``password_file: mqtt-password`` checks outside systemd
    too ($CREDENTIALS_DIRECTORY is only set for the service, and looked in first)."""
    (tmp_path / "mqtt-password").write_text("secret\n")
    cfg = _write(tmp_path, f"model:\n  path: {tiny_model}\nmqtt:\n  host: localhost\n"
                           "  username: u\n  password_file: mqtt-password\n")
    monkeypatch.chdir("/")
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    assert main(["check-config", str(cfg)]) == 0
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "mqtt-password").write_text("from-systemd\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    from edge_ser.publish.credentials import find_credential

    loaded = load_config(cfg)
    assert find_credential(Path("mqtt-password"), loaded.mqtt.config_dir) == creds / "mqtt-password"
    capsys.readouterr()


def test_check_config_bad_key_exit_2_one_line(tmp_path: Path) -> None:
    proc = _check_config(_write(tmp_path, "vad:\n  agressiveness: 2\n"))
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip() == (
        f"edge-ser check-config: error: {tmp_path / 'edge-ser.yaml'}:2: vad.agressiveness: "
        "unknown key"
    )


def test_a_home_relative_path_is_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    cfg = load_config(_write(tmp_path, "model:\n  path: ~/models/m.onnx\nmqtt:\n  host: h\n"
                                       "  username: u\n  password_file: ~/pw\n"))
    assert cfg.model.path == tmp_path / "home" / "models" / "m.onnx"
    assert cfg.mqtt.password_file == tmp_path / "home" / "pw"


def test_a_section_left_empty_is_the_defaults(tmp_path: Path) -> None:
    """Commenting out every line under a section leaves ``source:`` alone: its defaults."""
    assert load_config(_write(tmp_path, "source:\n#  type: file\nvad:\n")).source.type == "mic"


def test_a_root_only_password_for_load_credential_is_a_note_not_an_error(
    tmp_path: Path, tiny_model: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """docs/daemon.md: the password file is root-only and reaches the service through
    LoadCredential=; `sudo -u edge-ser edge-ser check-config` cannot read it and must not fail."""
    from edge_ser.errors import PublishError
    from edge_ser.publish import credentials

    def denied(path: Path, config_dir: Path | None = None) -> str:
        raise PublishError(f"mqtt.password_file: {config_dir}/{path}: cannot read "
                           "(Permission denied)")

    monkeypatch.setattr(credentials, "read_password", denied)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    text = (f"model:\n  path: {tiny_model}\nmqtt:\n  host: h\n  username: u\n"
            "  password_file: mqtt-password\n")
    assert main(["check-config", str(_write(tmp_path, text))]) == 0
    out = capsys.readouterr()
    assert out.out.strip() == "ok" and "note:" in out.err and "LoadCredential=" in out.err
    absolute = text.replace("mqtt-password", str(tmp_path / "mqtt-password"))
    assert main(["check-config", str(_write(tmp_path, absolute))]) == 2  # no unit hands it over


@pytest.mark.parametrize(
    ("mqtt", "line", "key", "why"),
    [
        ("  host: 'broker..lan'\n", 2, "mqtt.host", "not a valid host name (label empty"),
        ("  host: " + "b" * 100_000 + "\n", 2, "mqtt.host", "(100,000 characters)"),
        ("  host: " + ".".join(["b" * 60] * 5) + "\n", 2, "mqtt.host",
         "longer than a host name can be"),
        ("  host: h\n  username: " + "u" * 70_000 + "\n", 3, "mqtt.username",
         "70,000 bytes long; MQTT allows at most 65,535"),
        ("  client_id: \"a\\0b\"\n", 2, "mqtt.client_id", "NUL"),
        ("  prefix: " + "p" * 70_000 + "\n", 2, "mqtt.prefix", "makes topics"),
        ("  prefix: p\n  device_id: " + "d" * 70_000 + "\n", 3, "mqtt.device_id",
         "makes topics"),
        ("  discovery_prefix: " + "h" * 65_500 + "\n", 2, "mqtt.discovery_prefix",
         "makes topics"),
    ],
    ids=["empty-label", "huge-host", "long-dns-name", "huge-user", "nul-client-id",
         "huge-prefix", "huge-device-id", "long-discovery-prefix"],
)
def test_what_paho_cannot_send_is_refused_at_its_key(
    tmp_path: Path, mqtt: str, line: int, key: str, why: str
) -> None:
    """Before, these passed check-config and killed paho's network thread at run (an IDNA
    UnicodeError, or struct.error packing a string over MQTT's 65,535 bytes)."""
    path = _write(tmp_path, "mqtt:\n" + mqtt)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}:{line}: {key}"), msg[:300]
    assert why in msg and len(msg) < 400, msg[:400]


def test_a_password_longer_than_mqtt_allows_is_refused_at_its_key(
    tmp_path: Path, tiny_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "pw").write_text("x" * 10_000_000 + "\n")
    cfg = _write(tmp_path, f"source:\n  type: file\n  path: {VOICE_NOTE}\n"
                           f"model:\n  path: {tiny_model}\nmqtt:\n  host: localhost\n"
                           "  username: u\n  password_file: pw\n")
    assert main(["check-config", str(cfg)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"edge-ser check-config: error: {cfg}:9: mqtt.password_file: "
                   f"{tmp_path / 'pw'}: the password is 10,000,000 bytes long; MQTT allows at "
                   "most 65,535"), err[:300]


def test_a_password_file_others_may_read_is_a_warning(
    tmp_path: Path, tiny_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pw = tmp_path / "mqtt-password"
    pw.write_text("secret\n")
    cfg = _write(tmp_path, f"source:\n  type: file\n  path: {VOICE_NOTE}\n"
                           f"model:\n  path: {tiny_model}\nmqtt:\n  host: localhost\n"
                           "  username: u\n  password_file: mqtt-password\n")
    pw.chmod(0o644)
    assert main(["check-config", str(cfg)]) == 0  # allowed, but said
    out = capsys.readouterr()
    assert out.out.strip() == "ok"
    assert out.err.strip() == (
        f"edge-ser check-config: warning: {cfg}:9: mqtt.password_file: {pw} is readable by its "
        f"group and everyone (mode 0644): chmod 600 {pw} (under systemd: root-only, handed over "
        "by LoadCredential=)")
    pw.chmod(0o600)
    assert main(["check-config", str(cfg)]) == 0
    assert capsys.readouterr().err == ""
