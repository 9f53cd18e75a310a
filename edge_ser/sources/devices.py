"""PortAudio devices through a small PyAudio-shaped interface: finding, probing, listing.

PyAudio is an optional extra (``pip install 'edge-ser[mic]'``). Everything talks to
:class:`AudioBackend` (the part of ``pyaudio.PyAudio`` edge-ser uses), so tests can drive the
same code with a fake device that fails and comes back.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol

from edge_ser import SAMPLE_RATE
from edge_ser.errors import AudioError

log = logging.getLogger(__name__)

PA_INT16 = 8  # pyaudio.paInt16
PA_CONTINUE, PA_COMPLETE, PA_ABORT = 0, 1, 2
PA_INPUT_OVERFLOW = 2  # status flag in the callback
COMMON_RATES = (8000, 16000, 22050, 32000, 44100, 48000, 96000)


class AudioStream(Protocol):
    def is_active(self) -> bool: ...
    def stop_stream(self) -> None: ...
    def close(self) -> None: ...


class AudioBackend(Protocol):
    """The part of ``pyaudio.PyAudio`` edge-ser uses."""

    def get_device_count(self) -> int: ...
    def get_device_info_by_index(self, index: int) -> Mapping[str, Any]: ...
    def get_default_input_device_info(self) -> Mapping[str, Any]: ...
    def is_format_supported(self, rate: float, **kwargs: Any) -> bool: ...
    def open(self, **kwargs: Any) -> AudioStream: ...
    def terminate(self) -> None: ...


BackendFactory = Callable[[], AudioBackend]


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Point fd 2 at /dev/null: this drops every thread's stderr meanwhile, so only
    ``edge-ser devices`` (one thread) does it, never the daemon."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


_MUTED: list[Any] = []  # the C callbacks, kept alive for as long as the libraries may call them


def _mute_audio_libraries() -> None:
    """Give ALSA and JACK no-op message handlers: probing devices prints a dozen lines."""
    if _MUTED:
        return
    import ctypes
    import ctypes.util

    def lib(name: str, fallback: str) -> Any:
        try:
            return ctypes.CDLL(ctypes.util.find_library(name) or fallback)
        except OSError:
            return None

    _MUTED.append(None)
    asound, jack = lib("asound", "libasound.so.2"), lib("jack", "libjack.so.0")
    if asound is not None and hasattr(asound, "snd_lib_error_set_handler"):
        alsa_cb = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                                   ctypes.c_int, ctypes.c_char_p)(lambda *_: None)
        asound.snd_lib_error_set_handler(alsa_cb)
        _MUTED.append(alsa_cb)
    if jack is not None and hasattr(jack, "jack_set_error_function"):
        jack_cb = ctypes.CFUNCTYPE(None, ctypes.c_char_p)(lambda _: None)
        jack.jack_set_error_function(jack_cb)
        jack.jack_set_info_function(jack_cb)
        _MUTED.append(jack_cb)


NO_PYAUDIO = "PyAudio is not installed: pip install 'edge-ser[mic]' (needs portaudio19-dev)"


def pyaudio_installed() -> bool:
    """Whether ``import pyaudio`` would find it (without importing it, nor PortAudio)."""
    import importlib.util

    return importlib.util.find_spec("pyaudio") is not None


def pyaudio_backend(quiet: bool = False) -> AudioBackend:
    """A real ``pyaudio.PyAudio()``; :class:`AudioError` with the fix when it is missing.

    ALSA's and JACK's messages go to no-op handlers; ``quiet`` also points stderr at /dev/null
    meanwhile (what the libraries print directly), which only a one-thread command may do.
    """
    try:
        import pyaudio
    except ImportError as exc:
        raise AudioError(NO_PYAUDIO) from exc
    _mute_audio_libraries()
    with _quiet_stderr() if quiet else contextlib.nullcontext():
        backend: AudioBackend = pyaudio.PyAudio()
    return backend


def _supported(pa: AudioBackend, index: int, rate: int, channels: int) -> bool:
    try:
        return bool(pa.is_format_supported(
            rate, input_device=index, input_channels=channels, input_format=PA_INT16
        ))
    except (ValueError, OSError):
        return False


def input_devices(pa: AudioBackend) -> list[dict[str, Any]]:
    """Every input device: index, name, max channels, default rate and supported rates."""
    out = []
    for i in range(pa.get_device_count()):
        info = pa.get_device_info_by_index(i)
        channels = int(info.get("maxInputChannels", 0))
        if channels < 1:
            continue
        out.append({
            "index": i,
            "name": str(info.get("name", f"device {i}")),
            "channels": channels,
            "default_rate": int(float(info.get("defaultSampleRate", 0))),
            "rates": [r for r in COMMON_RATES if _supported(pa, i, r, 1)],
        })
    return out


def find_device(pa: AudioBackend, device: str | int | None) -> tuple[int, Mapping[str, Any]]:
    """Resolve the configured device (name substring, index or None = default) to an input."""
    if device is None:
        try:
            info = pa.get_default_input_device_info()
        except (OSError, ValueError) as exc:
            raise AudioError("no default audio input device") from exc
        return int(info["index"]), info
    if isinstance(device, int):
        try:
            info = pa.get_device_info_by_index(device)
        except (OSError, ValueError) as exc:
            raise AudioError(f"source.device: no audio device with index {device}") from exc
        if int(info.get("maxInputChannels", 0)) < 1:
            raise AudioError(f"source.device: device {device} ({info.get('name')}) has no input")
        return device, info
    for i in range(pa.get_device_count()):
        info = pa.get_device_info_by_index(i)
        if device.lower() in str(info.get("name", "")).lower() and info.get("maxInputChannels"):
            return i, info
    raise AudioError(f"source.device: no input device name contains {device!r}")


def choose_rate(pa: AudioBackend, index: int, info: Mapping[str, Any], channels: int,
                wanted: int | None) -> int:
    """``wanted`` if given; else 16 kHz when supported, else the device's default rate."""
    if wanted is not None:
        if not _supported(pa, index, wanted, channels):
            raise AudioError(f"source.rate: {info.get('name')} does not capture at {wanted} Hz")
        return wanted
    default = int(float(info.get("defaultSampleRate", 0)))
    for rate in (SAMPLE_RATE, default, 48000, 44100, 32000, 22050):
        if rate > 0 and _supported(pa, index, rate, channels):
            return rate
    raise AudioError(f"source.device: {info.get('name')} supports none of the usual rates")
