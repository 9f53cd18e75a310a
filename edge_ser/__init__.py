"""edge-ser: a private, on-device speech-emotion sensor.

Data flow, one module per stage::

    source -> vad -> windows -> (preprocess) -> model -> aggregate -> publish
"""

from __future__ import annotations

import os

# onnxruntime's official builds keep a telemetry queue and a device id under
# ~/.cache/Microsoft/DeveloperTools as soon as they are imported (docs/daemon.md, "Files");
# this switch is read when onnxruntime loads, so it is set here, before anything imports it.
# An explicit ORT_DISABLE_TELEMETRY=0 in the environment is left alone.
if not os.environ.get("ORT_DISABLE_TELEMETRY"):
    os.environ["ORT_DISABLE_TELEMETRY"] = "1"

__version__ = "0.1.0"

#: Class order of every edge-ser model's ``logits`` output (also stored in its metadata).
LABELS: tuple[str, ...] = ("anger", "happiness", "neutral", "sadness")
#: Sample rate of everything past the source stage, in Hz.
SAMPLE_RATE = 16_000
#: Default analysis window, in seconds (the paper's 8 s).
WINDOW_S = 8.0
#: Default capture block, in milliseconds: 3 VAD frames of 30 ms. Each block wakes the capture
#: and worker threads once, and at 30 ms those wake-ups cost more idle CPU than the VAD work.
CHUNK_MS = 90
