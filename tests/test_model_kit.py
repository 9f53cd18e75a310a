"""The compact model kit: losses, augmentation, folds, front end, tiny training, export, report."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edge_ser import LABELS  # noqa: E402
from edge_ser.audio import read_wav  # noqa: E402
from edge_ser.preprocess import prepare_window  # noqa: E402
from edge_ser_model import augment as aug  # noqa: E402
from edge_ser_model.data import Clip, load_corpora, speaker_folds, validation_split  # noqa: E402
from edge_ser_model.encoders import build_encoder  # noqa: E402
from edge_ser_model.encoders.compact import CompactFeatures  # noqa: E402
from edge_ser_model.features import vectors_of  # noqa: E402
from edge_ser_model.losses import FocalLoss, balanced_weights  # noqa: E402
from edge_ser_model.metrics import scores  # noqa: E402

pytestmark = pytest.mark.train


def example_clips(examples: Path) -> list[Clip]:
    out = []
    for p in sorted((examples / "clips").glob("*.wav")):
        emotion, _, speaker = p.stem.split("-")
        out.append(Clip(p, "ravdess", speaker, LABELS.index(emotion)))
    return out


def f0_autocorr(x: np.ndarray, start: int, rate: int = 16000) -> float:
    seg = x[start : start + 4096].astype(np.float64)
    ac = np.correlate(seg, seg, "full")[len(seg) - 1 :]
    lo, hi = rate // 500, rate // 70
    return rate / (lo + int(np.argmax(ac[lo:hi])))


# ---- focal loss -------------------------------------------------------------------------------

def test_focal_reduces_to_cross_entropy() -> None:
    logits = torch.tensor([[2.0, 0.5, -1.0, 0.0], [0.1, 0.2, 0.3, 3.0]])
    target = torch.tensor([0, 2])
    got = FocalLoss(gamma=0.0, alpha=None, smoothing=0.0)(logits, target)
    want = torch.nn.functional.cross_entropy(logits, target)
    assert torch.allclose(got, want, atol=1e-6)


def test_focal_matches_hand_computation() -> None:
    logits = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    p = torch.softmax(logits, -1)[0]
    alpha = torch.tensor([2.0, 1.0, 1.0, 1.0])
    s = 0.1
    q = torch.full((4,), s / 4)
    q[0] += 1 - s
    want = sum(float(alpha[c] * q[c] * (1 - p[c]) ** 2 * -math.log(p[c])) for c in range(4))
    got = float(FocalLoss(gamma=2.0, alpha=alpha, smoothing=s)(logits, torch.tensor([0])))
    assert got == pytest.approx(want, rel=1e-5)
    # an easy (confident, right) example is down-weighted much more than cross entropy
    easy = torch.tensor([[6.0, 0.0, 0.0, 0.0]])
    ratio = FocalLoss(2.0, None, 0.0)(easy, torch.tensor([0])) / torch.nn.functional.cross_entropy(
        easy, torch.tensor([0]))
    assert float(ratio) < 1e-4


def test_balanced_weights() -> None:
    w = balanced_weights(np.array([0, 0, 0, 1, 2, 3]), 4)
    assert w[0] == pytest.approx(6 / 12) and w[1] == pytest.approx(6 / 4)


# ---- augmentation -----------------------------------------------------------------------------

def test_augment_properties(examples: Path) -> None:
    x = read_wav(examples / "clips" / "neutral-ravdess-03.wav")
    rng = np.random.default_rng(0)
    assert np.allclose(aug.apply_gain(x, -6.0), x * 10 ** (-6 / 20), atol=1e-7)
    assert np.array_equal(aug.invert_polarity(x), -x)
    noise = aug.add_noise(np.zeros(16000, np.float32), 0.01, rng)
    assert 0.009 < float(noise.std()) < 0.011
    for _ in range(5):
        y = aug.augment(x, rng)
        assert y.shape == x.shape and y.dtype == np.float32 and np.abs(y).max() <= 1.0
        assert not np.allclose(y, x)


def test_pitch_shift_keeps_length_and_shifts_f0(examples: Path) -> None:
    x = read_wav(examples / "clips" / "neutral-ravdess-08.wav")
    energy = [float(np.sum(x[i : i + 4096] ** 2)) for i in range(0, len(x) - 4096, 1024)]
    start = 1024 * int(np.argmax(energy))  # the loudest (voiced) stretch
    f0 = f0_autocorr(x, start)
    assert 100 < f0 < 400
    up, down = aug.pitch_shift(x, 2.0), aug.pitch_shift(x, -2.0)
    assert len(up) == len(down) == len(x)
    assert 1.06 < f0_autocorr(up, start) / f0 < 1.19  # 2 semitones = x1.12
    assert 0.84 < f0_autocorr(down, start) / f0 < 0.94


# ---- data and folds ---------------------------------------------------------------------------

def test_folds_are_speaker_disjoint(shared_data: Path) -> None:
    assert len(load_corpora(shared_data)) == 2587  # the four corpora, calm dropped
    clips = load_corpora(shared_data, ("ravdess", "urdu"))
    assert len(clips) == 960
    assert len(load_corpora(shared_data, ("ravdess", "urdu"), calm="neutral")) == 1120
    folds = speaker_folds(clips, k=5, seed=0)
    seen = np.concatenate([te for _, te in folds])
    assert sorted(seen.tolist()) == list(range(len(clips)))
    for train, test in folds:
        assert not {clips[i].speaker for i in train} & {clips[i].speaker for i in test}
        fit, val = validation_split(clips, train)
        assert not {clips[i].speaker for i in fit} & {clips[i].speaker for i in val}
        assert len(np.intersect1d(fit, test)) == 0


def test_metrics() -> None:
    s = scores(np.array([0, 0, 1, 1, 2, 3]), np.array([0, 1, 1, 1, 2, 0]))
    assert s["wa"] == pytest.approx(4 / 6)
    assert s["uar"] == pytest.approx((0.5 + 1 + 1 + 0) / 4)


# ---- front end ---------------------------------------------------------------------------------

def test_front_end_ignores_padding(examples: Path) -> None:
    fe = CompactFeatures()
    x = read_wav(examples / "clips" / "anger-ravdess-03.wav")
    full = fe(torch.from_numpy(prepare_window(x, 8.0))[None])[0].detach().numpy()
    longer = fe(torch.from_numpy(prepare_window(x, 10.0))[None])[0].detach().numpy()
    part = vectors_of(fe, [x])[0]
    assert np.allclose(full, part, atol=1e-3) and np.allclose(full, longer, atol=1e-3)
    model = build_encoder("compact")
    assert model(torch.zeros(2, 16000)).shape == (2, 4)


def test_spectral_functionals_are_level_invariant(examples: Path) -> None:
    from edge_ser_model.encoders.compact_spectral import N_SPECTRAL

    fe = CompactFeatures()
    x = torch.from_numpy(prepare_window(read_wav(examples / "clips" / "anger-ravdess-03.wav")))
    loud = fe(x[None])[0].detach().numpy()
    quiet = fe(0.25 * x[None])[0].detach().numpy()  # -12 dB
    assert np.all(np.isfinite(loud)) and fe.dim == 4 * 64 + 5 + 5 + N_SPECTRAL
    # the log-mel band means move by the level (log 1/16 = -2.8); the spectral functionals
    # only through the log floor of the quietest bands
    assert np.mean(np.abs(loud[:64] - quiet[:64])) > 2.0
    assert np.max(np.abs(loud[-N_SPECTRAL:] - quiet[-N_SPECTRAL:])) < 0.3


# ---- tiny training, export, int8 -------------------------------------------------------------

def test_members_train_on_every_speaker_unless_early_stopping(examples: Path) -> None:
    from edge_ser_model.evaluate import train_members
    from edge_ser_model.features import compute_features
    from edge_ser_model.train import TrainConfig

    clips = example_clips(examples)
    feats = compute_features(clips, CompactFeatures(pitch=False, spectral=False), copies=0)
    idx = np.arange(len(clips))
    full = train_members(clips, feats, idx, TrainConfig(epochs=2, batch_size=4), seeds=[0])[0]
    stopped = train_members(clips, feats, idx, TrainConfig(epochs=2, batch_size=4, patience=1),
                            seeds=[0])[0]
    # the standardiser is fitted on the clips a member trains on
    assert np.allclose(full.feat_mean.numpy(), feats[:, 0].mean(0), atol=1e-4)
    assert not np.allclose(stopped.feat_mean.numpy(), feats[:, 0].mean(0), atol=1e-4)


def test_graph_mixes_the_branches_as_evaluate_does(examples: Path) -> None:
    """The shipped graph's log-linear mix is the one ``evaluate`` scores (``mix_voice``)."""
    from edge_ser_model.encoders.compact import CompactHead, CompactSER
    from edge_ser_model.encoders.voice import VoiceFeatures, VoiceHead
    from edge_ser_model.evaluate import mix_voice

    torch.manual_seed(0)
    dim = CompactFeatures().dim
    heads = [CompactHead(dim).eval() for _ in range(2)]
    branch, vhead = VoiceFeatures(random_init=True).eval(), VoiceHead().eval()
    with torch.no_grad():
        vhead.linear.weight.normal_(0.0, 0.2)
    model = CompactSER(heads=heads, voice=branch, voice_head=vhead, voice_weight=0.2).eval()
    x = torch.from_numpy(np.stack([prepare_window(read_wav(p)) for p in
                                   sorted((examples / "clips").glob("*.wav"))[:3]]))
    with torch.no_grad():
        got = torch.softmax(model(x), dim=-1).numpy()
        f = model.features(x)
        p_heads = torch.stack([torch.softmax(h(f), -1) for h in heads]).mean(0).numpy()
        p_voice = torch.softmax(vhead(branch(x)), -1).numpy()
    want = mix_voice(p_heads.astype(np.float64), p_voice.astype(np.float64), 0.2)
    assert np.allclose(got, want, atol=1e-5)
    assert not np.allclose(want, 0.8 * p_heads + 0.2 * p_voice, atol=1e-3)  # not arithmetic


def test_tiny_training_export_int8(examples: Path, tmp_path: Path) -> None:
    import onnx

    from edge_ser_model.encoders.voice import VoiceFeatures, train_voice_head
    from edge_ser_model.evaluate import train_members
    from edge_ser_model.export import check_contract, logits, read_metadata
    from edge_ser_model.features import compute_features
    from edge_ser_model.ship import assemble, calibration_windows, quantize_compact
    from edge_ser_model.train import TrainConfig

    clips = example_clips(examples)
    feats = compute_features(clips, CompactFeatures(), copies=1, seed=0)
    assert feats.shape == (8, 2, CompactFeatures().dim) and np.all(np.isfinite(feats))
    members = train_members(clips, feats, np.arange(8), TrainConfig(epochs=2, batch_size=4),
                            seeds=[0, 1])
    # the voice branch (random weights here: the graph, not the weights, is under test)
    branch = VoiceFeatures(random_init=True)
    vfeats = compute_features(clips, branch, copies=1, seed=0)
    labels = np.array([c.label for c in clips])
    head = train_voice_head(vfeats, labels, np.arange(8), c=1.0)
    model = assemble(members, voice=branch, voice_head=head, voice_weight=0.2)
    from edge_ser_model.export import base_metadata, export_onnx

    fp32, int8 = tmp_path / "m.fp32.onnx", tmp_path / "m.int8.onnx"
    export_onnx(model, fp32, base_metadata("compact", "tiny-fp32"))
    # one spectrum for the log-mel and the voice branch, one for the pitch tracker
    convs = [n.input[1] for n in onnx.load(str(fp32)).graph.node if n.op_type == "Conv"]
    assert sorted(convs) == ["features.logmel.spectrum.dft", "features.pitch.dft"], convs
    windows = calibration_windows(clips, n=8)
    quantize_compact(fp32, int8, windows)
    check_contract(int8)
    # voice LSTM layers 2-3 run int8; layer 1 (its input is a mel power spectrum) keeps fp32
    # weights straight from initializers, which onnxruntime prepacks (no DequantizeLinear)
    graph = onnx.load(str(int8)).graph
    ops = [n.op_type for n in graph.node]
    assert ops.count("DynamicQuantizeLSTM") == 2 and ops.count("LSTM") == 1, ops
    lstm = next(n for n in graph.node if n.op_type == "LSTM")
    assert lstm.name == "/lstms.0/LSTM", lstm.name  # the one reading the mel spectrum
    inits = {i.name: i.data_type for i in graph.initializer}
    assert all(inits.get(w) == onnx.TensorProto.FLOAT for w in lstm.input[1:4]), lstm.input
    assert read_metadata(int8)["quantization"].startswith("int8")
    assert "DynamicQuantizeLSTM" in read_metadata(int8)["quantization"]
    assert read_metadata(int8)["batching"] == "per-window"  # dynamic int8 scales span a batch
    a, b = logits(fp32, windows), logits(int8, windows)
    assert np.mean(a.argmax(1) == b.argmax(1)) >= 0.75
    assert np.max(np.abs(a - b)) < 0.5
    with torch.no_grad():
        ref = model(torch.from_numpy(windows)).numpy()
    assert np.allclose(ref, a, atol=1e-3)


def test_evaluate_writes_report(shared_data: Path, tmp_path: Path) -> None:
    from edge_ser.errors import ModelError
    from edge_ser_model.encoders.voice import find_voice_weights

    try:
        find_voice_weights()
        voice = []
    except ModelError:  # resemblyzer not installed: the same graph with random weights
        voice = ["--voice-random-init"]
    out = tmp_path / "eval"
    cmd = [sys.executable, "-m", "edge_ser_model", "evaluate", "--encoder", "compact",
           "--protocol", "cv", "--corpora", "ravdess,urdu", "--data", str(shared_data),
           "--limit", "30", "--copies", "0", "--folds", "2", "--seeds", "0", "--epochs", "2",
           "--cache", str(tmp_path / "cache"), "--out", str(out), *voice]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((out / "cv_report.json").read_text())
    assert set(report["systems"]) == {"compact", "compact_functionals", "voice_lr",
                                      "egemaps_lr", "egemaps_lr_spk_znorm"}
    for system in report["systems"].values():
        assert len(system["per_fold"]) == 2
        assert 0.0 <= system["summary"]["uar"]["mean"] <= 1.0
    assert (out / "confusion.png").stat().st_size > 1000
    assert "| compact |" in (out / "cv_report.md").read_text()


def test_shipped_model_contract() -> None:
    from edge_ser_model.export import check_contract, read_metadata

    path = Path(__file__).resolve().parent.parent / "models" / "edge-ser-compact.int8.onnx"
    check_contract(path)
    meta = read_metadata(path)
    assert meta["encoder"] == "compact" and "non-commercial" in meta["license"]
    from edge_ser_model.ship import license_of

    assert license_of(["urdu", "ravdess"]) == meta["license"]  # what train writes, unchanged
    assert license_of(["mine"], "CC BY 4.0 (my recordings)") == "CC BY 4.0 (my recordings)"
    assert "RAVDESS" in meta["training_data"]
    json.loads(meta["evaluation"])


def test_kit_misuse_is_refused_before_any_work(tmp_path: Path) -> None:
    """Options that used to fail with a traceback after minutes of features or CV."""
    afile = tmp_path / "afile"
    afile.write_text("x")
    bad_row = tmp_path / "data" / "mine"
    bad_row.mkdir(parents=True)
    (bad_row / "manifest.csv").write_text("file,corpus,speaker,emotion\na.wav,mine\n")
    kit = [sys.executable, "-m", "edge_ser_model"]
    cases = [
        (["evaluate", "--out", str(afile)], f"--out: {afile} is a file, not a folder"),
        (["train", "--out", str(afile)], f"--out: {afile} is a file, not a folder"),
        (["export", "--random-init", "--out", str(afile)], f"--out: {afile} is a file"),
        (["train", "--out", str(tmp_path / "m"), "--evaluation", str(tmp_path / "nope.json")],
         "--evaluation: cannot read"),
        (["evaluate", "--seeds", "a"], "--seeds: 'a' is not a comma-separated list"),
        (["evaluate", "--folds", "1"], "--folds: 1 is below 2"),
        (["evaluate", "--threads", "0"], "--threads: 0 is below 1"),
        (["evaluate", "--encoder", "compact", "--out", str(tmp_path / "e"), "--data",
          str(tmp_path / "data"), "--corpora", "mine", "--voice-random-init"],
         f"{bad_row / 'manifest.csv'}:2: speaker, emotion: empty or missing"),
        (["evaluate", "--encoder", "compact", "--out", str(tmp_path / "e"), "--data",
          str(tmp_path / "no-corpora"), "--voice-random-init"], "point --data at the corpora"),
        (["evaluate", "--out", str(tmp_path / "e")],
         "--encoder whisper-tiny: give --weights DIR"),
        (["build", "--encoder", "compact", "--weights", str(tmp_path)],
         "--weights / --random-init: the compact encoder is trained here"),
        (["train", "--out", str(tmp_path / "m"), "--random-init"],
         "--encoder whisper-tiny: give --evaluation loco_report.json"),
        (["train", "--out", str(tmp_path / "m"), "--random-init", "--representation", "L9-x",
          "--head", "lr"], "representation: 'L9-x' is not like L2-mean"),
        (["train", "--out", str(tmp_path / "m"), "--random-init", "--representation", "L9-mean",
          "--head", "lr"], "--representation: whisper-tiny has layers 0-4"),
        (["build", "--random-init", "--protocol", "cv", "--out", str(tmp_path / "b")],
         "the choice comes from leave-one-corpus-out"),
        (["build", "--random-init", "--scheme", "bogus", "--out", str(tmp_path / "b")],
         "quantization scheme 'bogus'"),
        (["evaluate", "--copies", "-1"], "--copies: -1 is below 0"),
        (["train", "--out", str(tmp_path / "m"), "--data", str(tmp_path / "data"),
          "--corpora", "mine"], "--license: the licence of corpus mine is not known"),
    ]
    for args, want in cases:
        proc = subprocess.run([*kit, *args], capture_output=True, text=True, timeout=300,
                              cwd=tmp_path)
        assert proc.returncode == 2, (args, proc.stderr[-1500:])
        assert "Traceback" not in proc.stderr and want in proc.stderr, (args, proc.stderr)


def test_cli_help_does_not_import_torch() -> None:
    """``edge-ser-model --help`` (and every sub-command's arguments) stays light: torch is
    imported only when a command runs."""
    code = ("import sys; from edge_ser_model.cli import build_parser; build_parser(); "
            "print('torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "False"
