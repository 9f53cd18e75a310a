"""Benchmarks: the quick suite on small real inputs writes a complete report; compare; sensors.

Models are the tiny stand-ins of ``benchmarks.standin`` (built with onnx.helper, random
weights) so no DistilHuBERT build runs here; speech is the bundled RAVDESS clips; the e2e test
runs the real daemon against a real mosquitto. Nothing asserts on timings.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from benchmarks import SCHEMA
from benchmarks.flops import _runtime_shapes, count_flops
from benchmarks.measure import Runs, Settings
from benchmarks.sensors import SysfsSensors
from benchmarks.standin import build_standin
from benchmarks.thermal import measure_thermal
from benchmarks.variants import resolve_variants
from edge_ser.errors import EdgeSerError
from tests.conftest import REPO

EDGE_SER = [sys.executable, "-m", "edge_ser"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def standins(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("standin")
    return build_standin(d / "tiny.fp32.onnx"), build_standin(d / "tiny.int8.onnx", int8=True)


@pytest.fixture(scope="module")
def quick_report(standins: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bench") / "quick"
    nowhere = out.parent / "no-such-sysfs"
    cmd = [*EDGE_SER, "bench", "--quick", "--out", str(out), "--threads", "1",
           "--duration", "2", "--skip", "e2e", "--thermal-root", str(nowhere),
           "--cpu-root", str(nowhere),
           "--models", str(standins[1]), str(standins[0])]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().endswith("report.md")
    return out


def _numbers_outside_figures(node: Any, path: str = "") -> list[str]:
    """Paths of numbers that are not inside a {"value", "unit"} or {"values", "unit"} figure."""
    bad: list[str] = []
    if isinstance(node, dict):
        if "unit" in node and ("value" in node or "values" in node):
            assert isinstance(node["unit"], str) and node["unit"], path
            return bad
        for k, v in node.items():
            bad += _numbers_outside_figures(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            bad += _numbers_outside_figures(v, f"{path}[{i}]")
    elif isinstance(node, (int, float)) and not isinstance(node, bool):
        bad.append(path)
    return bad


def test_quick_report_has_every_section_key_and_unit(quick_report: Path) -> None:
    r = json.loads((quick_report / "report.json").read_text(encoding="utf-8"))
    assert r["schema"] == SCHEMA and r["quick"] is True
    m = r["machine"]
    for key in ("cpu_model", "cpu_flags", "os", "python", "onnxruntime"):
        assert m[key], key
    assert m["logical_cores"]["unit"] == "count" and m["logical_cores"]["value"] >= 1
    assert m["ram_total"]["unit"] == "MiB" and m["ram_total"]["value"] > 0
    assert _numbers_outside_figures(r) == []

    lat = r["latency"]["models"]  # a missing model file is refused up front (misuse test)
    for name in ("tiny.int8", "tiny.fp32"):
        m1 = lat[name]
        assert m1["status"] == "ok", m1
        st = m1["threads"]["1"]
        units = {k: st[k]["unit"] for k in ("median", "p95", "p99", "rtf", "achieved",
                                            "gemm_share", "cpu_per_window", "core_share")}
        assert units == {"median": "ms", "p95": "ms", "p99": "ms", "rtf": "s/s",
                         "achieved": "GFLOP/s", "gemm_share": "%", "cpu_per_window": "ms",
                         "core_share": "% of one core"}
        assert st["rtf"]["value"] > 0 and st["core_share"]["value"] > 0
        assert st["median"]["value"] <= st["p95"]["value"] <= st["p99"]["value"]
        assert len(st["samples"]["values"]) == st["windows"]["value"] == 3
        assert m1["flops_per_window"] == {"value": 0.0164, "unit": "GFLOP"}
    assert r["latency"]["gemm"]["1"]["rate"]["unit"] == "GFLOP/s"
    assert r["latency"]["gemm"]["1"]["rate"]["value"] > 0

    for name in ("tiny.int8", "tiny.fp32"):
        ram = r["ram"]["models"][name]
        for arena in ("arena_on", "arena_off", "low_memory"):
            f = ram[arena]
            assert f["peak"]["unit"] == "MiB"
            assert f["start"]["value"] < f["after_load"]["value"] <= f["peak"]["value"]
            assert len(f["timeline"]["t"]["values"]) == len(f["timeline"]["rss"]["values"]) > 0
            assert f["median_latency"]["unit"] == "ms" and f["median_latency"]["value"] > 0

    cont = r["continuous_speech"]["models"]["tiny.int8"]
    assert cont["status"] == "ok" and cont["rtf"] == lat["tiny.int8"]["threads"]["1"]["rtf"]
    assert cont["core_share"]["unit"] == "% of one core"
    assert cont["int8_fp32_agreement"] == {"value": None, "unit": "%"}  # custom files: no pair

    ids = {t["id"] for t in r["targets"]}
    assert {"distilhubert_int8_size", "int8_not_slower", "int8_vs_torch", "distilhubert_rss",
            "shipped_int8_agreement", "shipped_int8_not_slower", "idle_cpu",
            "event_latency"} <= ids
    assert not ids & {"shipped_cheaper_flops", "shipped_cheaper_time"}  # retired
    not_run = {t["id"]: t for t in r["targets"]}["event_latency"]
    assert not_run["pass"] is None and "e2e not run" in not_run["note"]
    verdicts = {d["duty"].split(":")[0]: d["verdict"] for d in r["duties"]}
    assert verdicts["tiny.int8"] in ("fits", "does not fit")


def test_machine_without_sensors_says_no_sensor(quick_report: Path) -> None:
    r = json.loads((quick_report / "report.json").read_text(encoding="utf-8"))
    th = r["thermal"]
    assert th["status"] == "ok"
    assert th["sensors"] == {"temperature": "no sensor", "frequency": "no sensor",
                             "throttle": "no sensor"}
    assert th["steady_temp"] == {"value": None, "unit": "°C"}
    assert th["time_to_throttle"]["value"] is None and th["throttle_method"] == "no sensor"
    assert set(th["samples"]["temperature"]["values"]) == {None}
    assert any(v for v in th["samples"]["cpu"]["values"])  # the load did run
    md = (quick_report / "report.md").read_text(encoding="utf-8")
    assert "Steady-state temperature: no sensor" in md
    thermal_duty = [d for d in r["duties"] if "without throttling" in d["duty"]]
    assert thermal_duty and thermal_duty[0]["verdict"] == "unknown"


def test_report_md_and_plots(quick_report: Path) -> None:
    md = (quick_report / "report.md").read_text(encoding="utf-8")
    for heading in ("## Machine", "## Verdicts", "## Targets", "## Continuous speech, per model",
                    "## Latency per window", "## Memory (RSS)", "## Temperature and throttling"):
        assert heading in md
    assert "| tiny.int8 | 1 |" in md
    for png in ("latency.png", "rss.png", "thermal.png"):
        data = (quick_report / png).read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 5000, png
        assert f"]({png})" in md


def test_compare_lines_up_two_reports(quick_report: Path, tmp_path: Path) -> None:
    a = quick_report / "report.json"
    other = json.loads(a.read_text(encoding="utf-8"))
    other["machine"]["cpu_model"] = "Cortex-A76 (board B)"
    st = other["latency"]["models"]["tiny.int8"]["threads"]["1"]
    st["median"]["value"] = st["median"]["value"] * 2
    b = tmp_path / "b.json"
    b.write_text(json.dumps(other), encoding="utf-8")
    proc = subprocess.run([*EDGE_SER, "bench", "--compare", str(a), str(b)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "Cortex-A76 (board B)" in proc.stdout
    row = next(ln for ln in lines if ln.startswith("| tiny.int8 1 thr latency median |"))
    assert row.rstrip().endswith("| 2.00 x |")
    assert any(ln.startswith("| tiny.fp32 peak RSS (arena on) |") for ln in lines)
    assert "A is a quick run" not in proc.stdout  # both quick
    assert "| mode | quick | quick |" in proc.stdout and "B / A above 1" in proc.stdout
    other["quick"] = False
    other["machine"]["other_processes_cpu"] = {"value": 1.2, "unit": "cores"}
    b.write_text(json.dumps(other), encoding="utf-8")
    proc = subprocess.run([*EDGE_SER, "bench", "--compare", str(a), str(b)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert "A is a quick run and B a full run" in proc.stdout
    assert "B's machine was busy" in proc.stdout


def test_compare_takes_a_hand_edited_report_and_refuses_another_major_version(
        tmp_path: Path) -> None:
    from benchmarks.compare import compare, load_report

    a = {"schema": SCHEMA, "quick": True, "machine": {"cpu_model": "A"},
         "latency": {"gemm": {"1": {"rate": {"value": 80.0, "unit": "GFLOP/s"}}},
                     "models": {"m": {"flops_per_window": {"value": 2.8, "unit": "GFLOP"},
                                      "threads": {"1": {"median": {"value": 20.0, "unit": "ms"}},
                                                  "x": {"median": {"value": "fast"}}}},
                                "odd": [1]}},
         "ram": {"models": {"m": {"arena_on": {"peak": {"value": 90.0, "unit": "MiB"}}}}},
         "targets": [{"target": "no id"}, {"id": "t", "target": "T", "pass": True,
                                             "measured": {"value": 1.5, "unit": "x"}}, 7]}
    b = json.loads(json.dumps(a))
    b["latency"]["models"]["m"]["threads"]["1"]["median"]["value"] = 30.0
    rows = {r["what"]: r for r in compare(a, b, "a", "b")["rows"]}
    assert rows["m 1 thr latency median"]["b_over_a"]["value"] == 1.5
    assert rows["m x thr latency median"]["b_over_a"]["value"] is None  # "fast" is no figure
    assert rows["GEMM limit 1 thr"]["a"]["value"] == 80.0
    assert rows["target: T"]["a"] == "pass (1.50 x)"
    newer = tmp_path / "v2.json"
    newer.write_text(json.dumps({**a, "schema": "edge-ser-bench/2"}), encoding="utf-8")
    with pytest.raises(EdgeSerError, match=f"schema {SCHEMA} expected"):
        load_report(newer)
    minor = tmp_path / "v1.1.json"
    minor.write_text(json.dumps({**a, "schema": SCHEMA + ".1"}), encoding="utf-8")
    assert load_report(minor)["machine"]["cpu_model"] == "A"


def test_other_processes_cpu_is_measured_apart_from_ours() -> None:
    """Our own CPU (and a child we waited for) is not other work; a busy process we did not
    start as a measured child is."""
    import time

    from benchmarks.machine import OtherWork

    def ours_counted() -> float:
        """Other work while we (and a child) spin, minus other work while we sleep as long:
        what the machine's other users add (CI runners are shared) cancels out."""
        work = OtherWork()
        t0, w0 = time.process_time(), time.monotonic()
        while time.process_time() - t0 < 0.8:  # a core of our own
            pass
        subprocess.run([sys.executable, "-c", "import time; t=time.process_time()\n"
                        "while time.process_time() - t < 0.5: pass"], check=True)
        mine = work.cores()
        assert mine["unit"] == "cores", mine
        quiet = OtherWork()
        time.sleep(time.monotonic() - w0)
        return float(mine["value"]) - float(quiet.cores()["value"])

    # three tries: a neighbour's burst in one window is not our CPU counted as theirs
    counted: list[float] = []
    while len(counted) < 3 and (not counted or counted[-1] >= 0.4):
        counted.append(ours_counted())
    assert counted[-1] < 0.4, counted
    work = OtherWork()
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(1.5)
        other = work.cores()  # measured while it runs, before it is reaped
    finally:
        busy.kill()
        busy.wait()
    assert other["value"] > 0.6, other


def test_bad_input_gives_one_line_error(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.json"
    bogus.write_text('{"hello": 1}', encoding="utf-8")
    proc = subprocess.run([*EDGE_SER, "bench", "--compare", str(bogus), str(bogus)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"edge-ser bench: error: {bogus}: not an edge-ser benchmark "
                                   f"report (schema {SCHEMA} expected)")
    tiny = tmp_path / "tiny.json"
    tiny.write_text(json.dumps({"schema": SCHEMA}), encoding="utf-8")
    proc = subprocess.run([*EDGE_SER, "bench", "--compare", str(tiny), str(tiny), "--out",
                           str(bogus)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"edge-ser bench: error: --out: {bogus} is a file, not a folder"
    proc = subprocess.run([*EDGE_SER, "bench", "--quick", "--out", str(tmp_path / "o"),
                           "--models", "no-such-model"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("edge-ser bench: error: --models: unknown model")
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()  # refused before the folder is made
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model at all")
    proc = subprocess.run([*EDGE_SER, "bench", "--quick", "--out", str(tmp_path / "o"),
                           "--models", str(junk)], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"edge-ser bench: error: --models: {junk}: not a loadable ONNX "
                                  "model (") and proc.stderr.count("\n") == 1, proc.stderr


def test_flops_counted_from_the_graph(standins: tuple[Path, Path]) -> None:
    # Reshape [1,128000] -> [1,500,256] @ [256,64], then [1,64] @ [64,4]: 2 x MACs.
    expected = 2 * (500 * 256 * 64 + 64 * 4)
    for path in standins:
        fl = count_flops(path)
        assert fl["flops"] == expected and fl["nodes_unresolved"] == 0
    # the fallback for shapes shape inference cannot resolve: one onnxruntime run
    shapes = _runtime_shapes(onnx.load(str(standins[0])), ["frames", "hr", "pooled"], 128000)
    assert shapes == {"frames": [1, 500, 256], "hr": [1, 500, 64], "pooled": [1, 64]}


def test_rss_target_is_judged_in_low_memory_mode_with_its_price_stated() -> None:
    from benchmarks.targets import evaluate_targets
    from benchmarks.units import q

    def setting(peak: float, ms: float) -> dict[str, Any]:
        return {"peak": q(peak, "MiB", 1), "median_latency": q(ms, "ms", 1)}

    report = {"ram": {"models": {"distilhubert-int8": {
        "status": "ok", "arena_on": setting(201, 160), "arena_off": setting(204, 168),
        "low_memory": setting(139, 282)}}}}
    row = {t["id"]: t for t in evaluate_targets(report)}["distilhubert_rss"]
    assert row["pass"] is True and row["measured"]["value"] == 139
    assert "201 MiB" in row["note"] and "282 ms" in row["note"] and "160 ms" in row["note"]
    report["ram"]["models"]["distilhubert-int8"]["low_memory"] = setting(170, 300)
    assert {t["id"]: t for t in evaluate_targets(report)}["distilhubert_rss"]["pass"] is False


def test_duty_verdict_is_unknown_when_a_figure_was_not_measured() -> None:
    """A figure that was not measured gives "unknown", never "does not fit" or "fits"."""
    from benchmarks.targets import duty_verdicts
    from benchmarks.units import q

    def e2e(p95: float | None, idle: float | None) -> dict[str, Any]:
        return {"e2e": {"status": "ok", "model": "m", "speech": {"latency_p95": q(p95, "s")},
                        "idle": {"cpu": q(idle, "%")}}}

    def verdict(report: dict[str, Any]) -> str:
        return str(duty_verdicts(report, 400)[-1]["verdict"])

    assert verdict(e2e(0.5, 1.0)) == "fits"
    assert verdict(e2e(1.5, 1.0)) == "does not fit"
    assert verdict(e2e(0.5, None)) == "unknown"
    assert verdict(e2e(None, 1.0)) == "unknown"
    untimed = {"latency": {"models": {"m": {"status": "ok", "window": q(8, "s"),
                                            "threads": {"1": {"p99": q(None, "ms")}}}}}}
    assert duty_verdicts(untimed, 400)[0]["verdict"] == "unknown"
    # timed but RSS never measured (--skip ram): half the duty is unknown, so is the verdict
    timed = {"latency": {"models": {"m": {"status": "ok", "window": q(8, "s"),
                                          "threads": {"1": {"p99": q(24, "ms")}}}}}}
    row = duty_verdicts(timed, 400)[0]
    assert row["verdict"] == "unknown" and "RSS not measured" in row["reason"], row
    timed["latency"]["models"]["m"]["threads"]["1"]["p99"] = q(9000, "ms")  # misses anyway
    assert duty_verdicts(timed, 400)[0]["verdict"] == "does not fit"
    # a thermal run with a temperature but nothing that tells throttling
    thermal = {"thermal": {"status": "ok", "model": "m", "threads": q(1, "count"),
                           "duration": q(3, "s"), "throttled": None,
                           "steady_temp": q(59.0, "°C", 1)}}
    row = duty_verdicts(thermal, 400)[-1]
    assert row["verdict"] == "unknown" and "steady 59" in row["reason"], row
    assert "no temperature" not in row["reason"]


def test_lstm_flops_count_every_step(tmp_path: Path) -> None:
    from onnx import TensorProto, helper, numpy_helper

    # waveform [1, 128000] -> [800, 1, 160] (10-ms frames) -> LSTM(160 -> 32): 800 steps of
    # 4 gates x 32 x (160 + 32) MACs, forward and bidirectional
    rng = np.random.default_rng(0)
    for direction, dirs in ((b"forward", 1), (b"bidirectional", 2)):
        inits = [numpy_helper.from_array(np.array([800, 1, 160], np.int64), "shape"),
                 numpy_helper.from_array(rng.normal(size=(dirs, 128, 160)).astype(np.float32), "W"),
                 numpy_helper.from_array(rng.normal(size=(dirs, 128, 32)).astype(np.float32), "R")]
        nodes = [helper.make_node("Reshape", ["waveform", "shape"], ["x"]),
                 helper.make_node("LSTM", ["x", "W", "R"], ["y"], hidden_size=32,
                                  direction=direction.decode())]
        graph = helper.make_graph(
            nodes, "lstm", [helper.make_tensor_value_info("waveform", TensorProto.FLOAT,
                                                          ["batch", 128000])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
        path = tmp_path / f"lstm-{dirs}.onnx"
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
        fl = count_flops(path)
        assert fl["by_op"] == {"LSTM": 2.0 * 800 * dirs * 4 * 32 * (160 + 32)}, fl
        assert fl["nodes_unresolved"] == 0


def test_thermal_reads_a_sysfs_tree(standins: tuple[Path, Path], tmp_path: Path) -> None:
    zone = tmp_path / "thermal" / "thermal_zone0"
    zone.mkdir(parents=True)
    (zone / "type").write_text("cpu-thermal\n")
    (zone / "temp").write_text("65500\n")
    freq = tmp_path / "cpu" / "cpu0" / "cpufreq"
    freq.mkdir(parents=True)
    (freq / "scaling_cur_freq").write_text("600000\n")
    (freq / "cpuinfo_max_freq").write_text("1500000\n")
    sensors = SysfsSensors(tmp_path / "thermal", tmp_path / "cpu", tmp_path / "no-throttle",
                           vcgencmd="")
    reading = sensors.read()
    assert reading.temp_c == 65.5 and reading.freq_mhz == [600.0]
    assert sensors.max_freq_mhz() == 1500.0
    (freq / "base_frequency").write_text("1200000\n")  # intel_pstate: the sustained rating
    assert SysfsSensors(tmp_path / "thermal", tmp_path / "cpu", tmp_path / "no-throttle",
                        vcgencmd="").max_freq_mhz() == 1200.0
    (freq / "base_frequency").unlink()

    settings = Settings(out=tmp_path / "out", quick=True, max_threads=1, thermal_s=3.0,
                        thermal_root=tmp_path / "thermal", cpu_root=tmp_path / "cpu")
    variants, _ = resolve_variants([str(standins[1])], tmp_path / "cache")
    th = measure_thermal(variants, Runs(settings))
    assert th["status"] == "ok", th
    assert th["steady_temp"] == {"value": 65.5, "unit": "°C"}
    assert "frequency below 90%" in th["throttle_method"]
    assert th["time_to_throttle"]["unit"] == "s" and th["time_to_throttle"]["value"] is not None
    assert th["throttled"] is True


def test_throttle_flags_from_vcgencmd_when_present_else_sysfs(tmp_path: Path) -> None:
    node = tmp_path / "get_throttled"
    node.write_text("0\n")
    fake = tmp_path / "vcgencmd"
    fake.write_text("#!/bin/sh\necho throttled=0x6\n")
    fake.chmod(0o755)
    both = SysfsSensors(tmp_path / "thermal", tmp_path / "cpu", node, vcgencmd=str(fake))
    assert both.read().throttle_flags == 0x6 and both.describe()["throttle"].endswith(
        "vcgencmd get_throttled")
    sysfs = SysfsSensors(tmp_path / "thermal", tmp_path / "cpu", node, vcgencmd="")
    assert sysfs.read().throttle_flags == 0 and sysfs.describe()["throttle"] == str(node)


@pytest.mark.broker
def test_e2e_daemon_to_mqtt(standins: tuple[Path, Path], tmp_path: Path) -> None:
    from benchmarks.e2e import daemon_missing

    if shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists():
        pytest.skip("needs mosquitto (apt-get install mosquitto)")
    if daemon_missing():
        pytest.skip(str(daemon_missing()))
    out = tmp_path / "e2e"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.e2e", "--quick", "--out", str(out),
                           "--models", str(standins[1])], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    e = json.loads((out / "report.json").read_text(encoding="utf-8"))["e2e"]
    assert e["status"] == "ok", e
    sp = e["speech"]
    assert sp["events"]["value"] >= 2 and sp["events_unmatched"]["value"] == 0
    assert sp["latency_p50"]["unit"] == sp["latency_p95"]["unit"] == "s"
    assert 0 < sp["latency_p50"]["value"] <= sp["latency_p95"]["value"]
    assert e["idle"]["status"] == "ok" and e["idle"]["cpu"]["unit"] == "% of one core"
    assert e["idle"]["cpu"]["value"] is not None
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "End of speech -> MQTT event: p50" in md


@pytest.mark.parametrize(
    ("args", "why"),
    [
        (["--out", "{file}"], "--out: {file} is a file, not a folder"),
        (["--duration", "nan"], "argument --duration: must be a number of seconds above 0"),
        (["--duration", "-5"], "argument --duration: must be a number of seconds above 0"),
        (["--threads", "0"], "argument --threads: must be at least 1"),
        (["--models", "/nonexistent.onnx"], "--models: no such model file /nonexistent.onnx"),
        (["--thermal-model", "bogus"], "--thermal-model: unknown model 'bogus'"),
    ],
)
def test_bench_misuse_is_one_line_before_measuring(
    tmp_path: Path, args: list[str], why: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from edge_ser.cli import main

    file = tmp_path / "a-file"
    file.write_text("")
    args = [a.replace("{file}", str(file)) for a in args]
    try:
        rc = main(["bench", "--quick", "--skip", "latency", "ram", "e2e", *args])
    except SystemExit as exc:  # argparse: usage, then the error line
        rc = int(exc.code or 0)
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("edge-ser bench: error: "), err
    assert why.replace("{file}", str(file)) in err[-1]


def _sliced_at_end_of_speech(path: Path) -> Path:
    """The stand-in with the Whisper-based model's first step: the window is cut after its last
    non-zero sample (rounded up to a whole frame), so the work depends on the data."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    c: dict[str, Any] = {
        "zero": np.array(0.0, np.float32), "frame": np.array(256.0, np.float32),
        "one": np.array(1.0, np.float32), "lo": np.array(256.0, np.float32),
        "hi": np.array(128000.0, np.float32), "start": np.array([0], np.int64),
        "axis": np.array([1], np.int64), "shape": np.array([1, -1, 256], np.int64),
        "w": rng.standard_normal((256, 64)).astype(np.float32),
        "w2": rng.standard_normal((64, 4)).astype(np.float32),
        "limit": np.array(128000.0, np.float32), "pos0": np.array(1.0, np.float32)}
    nodes = [
        helper.make_node("Range", ["pos0", "limit_plus", "one"], ["pos"]),
        helper.make_node("Add", ["limit", "one"], ["limit_plus"]),
        helper.make_node("Equal", ["waveform", "zero"], ["is_zero"]),
        helper.make_node("Not", ["is_zero"], ["voiced"]),
        helper.make_node("Cast", ["voiced"], ["voiced_f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["voiced_f", "pos"], ["voiced_pos"]),
        helper.make_node("ReduceMax", ["voiced_pos"], ["last"], keepdims=0),
        helper.make_node("Div", ["last", "frame"], ["frames_f"]),
        helper.make_node("Ceil", ["frames_f"], ["frames_up"]),
        helper.make_node("Mul", ["frames_up", "frame"], ["end_f"]),
        helper.make_node("Clip", ["end_f", "lo", "hi"], ["end_c"]),
        helper.make_node("Cast", ["end_c"], ["end_i"], to=TensorProto.INT64),
        helper.make_node("Reshape", ["end_i", "axis"], ["end"]),
        helper.make_node("Slice", ["waveform", "start", "end", "axis"], ["speech"]),
        helper.make_node("Reshape", ["speech", "shape"], ["frames"]),
        helper.make_node("MatMul", ["frames", "w"], ["hidden"]),
        helper.make_node("ReduceMean", ["hidden"], ["pooled"], axes=[1], keepdims=0),
        helper.make_node("MatMul", ["pooled", "w2"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes, "sliced", [helper.make_tensor_value_info("waveform", TensorProto.FLOAT,
                                                        [1, 128000])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(v, k) for k, v in c.items()])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_flops_of_a_graph_that_stops_at_the_end_of_speech_count_a_full_window(
        tmp_path: Path) -> None:
    import onnxruntime as ort

    path = _sliced_at_end_of_speech(tmp_path / "sliced.onnx")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    short = np.zeros((1, 128000), np.float32)
    short[0, :40000] = 0.1  # 2.5 s of sound, then padding: the graph does less work
    assert sess.run(["logits"], {"waveform": short})[0].shape == (1, 4)
    fl = count_flops(path)
    assert fl["nodes_unresolved"] == 0
    assert fl["flops"] == 2 * (500 * 256 * 64 + 64 * 4), fl  # all 500 frames of 8 s


def test_benchmark_windows_are_speech_to_the_last_sample() -> None:
    from benchmarks.inputs import fill_to_end, speech_windows

    windows = speech_windows(8)
    assert len({w.tobytes() for w in windows}) == 8
    for w in windows:
        assert w.shape == (128000,) and w[-1] != 0 and 0.9 < float(np.abs(w).max()) <= 0.951
    padded = np.zeros(10, np.float32)
    padded[:4] = [1, 2, 3, 4]
    assert fill_to_end(padded).tolist() == [1, 2, 3, 4, 1, 2, 3, 4, 1, 2]


def test_named_variants_are_the_shipped_whisper_model_and_the_compact_one(
        tmp_path: Path) -> None:
    from benchmarks.options import DEFAULT_NAMES
    from benchmarks.soak import MODEL

    assert DEFAULT_NAMES[:3] == ("shipped-int8", "shipped-fp32", "compact-int8")
    variants, _ = resolve_variants(["shipped-int8", "shipped-fp32", "compact-int8",
                                    "compact-fp32"], tmp_path / "cache")
    by = {v.name: v for v in variants}
    assert by["shipped-int8"].path == REPO / "models" / "edge-ser-whisper-tiny.int8.onnx"
    assert by["shipped-fp32"].path == REPO / "models" / "edge-ser-whisper-tiny.fp32.onnx"
    assert by["compact-int8"].path == REPO / "models" / "edge-ser-compact.int8.onnx"
    assert MODEL == by["shipped-int8"].path  # the soak runs the default model
    for v in variants:
        assert v.skipped is None, v.skipped
        assert (v.family, v.precision) == tuple(v.name.rsplit("-", 1))
    assert by["shipped-int8"].encoder == by["shipped-fp32"].encoder == "whisper-tiny"
    assert by["compact-int8"].encoder == "compact"


def test_agreement_on_real_speech(standins: tuple[Path, Path], tmp_path: Path) -> None:
    """int8 against its fp32 twin on real speech: the shared corpora when they are beside the
    checkout (every corpus counted apart), else the bundled clips."""
    from benchmarks.agreement import AGREEMENT_WINDOWS, measure_agreement
    from benchmarks.variants import Variant

    fp32 = Variant("tiny-fp32", "onnx", "shipped", "fp32", path=standins[0])
    int8 = Variant("tiny-int8", "onnx", "shipped", "int8", path=standins[1])
    a = measure_agreement(Runs(Settings(out=tmp_path, quick=True)), int8, fp32)
    assert a["status"] == "ok", a
    n = a["windows"]["value"]
    assert a["argmax_agreement"]["unit"] == "%" and 0 <= a["argmax_agreement"]["value"] <= 100
    assert sum(c["windows"]["value"] for c in a["by_corpus"].values()) == n
    assert a["disagreements"]["value"] == round(n * (1 - a["argmax_agreement"]["value"] / 100))
    shared = REPO.parent / "shared" / "data" / "ravdess" / "manifest.csv"
    if shared.is_file():
        assert n == AGREEMENT_WINDOWS[True] and len(a["by_corpus"]) >= 2, a["by_corpus"]
        assert "shared/data" in a["source"]
    else:
        assert 0 < n <= 8 and "bundled clips" in a["source"]


def test_shipped_targets_and_continuous_speech_rows() -> None:
    from benchmarks.targets import continuous_speech, duty_verdicts, evaluate_targets
    from benchmarks.units import q

    def model(family: str, prec: str, median: float) -> dict[str, Any]:
        return {"status": "ok", "kind": "onnx", "family": family, "precision": prec,
                "encoder": "whisper-tiny",
                "window": q(8, "s"), "flops_per_window": q(4.1, "GFLOP"),
                "threads": {"1": {"median": q(median, "ms"), "mean": q(median, "ms"),
                                  "p99": q(median, "ms"), "rtf": q(median / 8000, "s/s"),
                                  "core_share": q(median / 80, "% of one core")}}}

    report: dict[str, Any] = {
        "variants": {"shipped-int8": {"encoder": "whisper-tiny"}},
        "latency": {"models": {"shipped-int8": model("shipped", "int8", 20.0),
                               "shipped-fp32": model("shipped", "fp32", 30.0)},
                    "ratios": {"1": {"shipped_int8_speedup_vs_fp32": q(1.5, "x")}},
                    "agreement": {"shipped": {
                        "status": "ok", "argmax_agreement": q(98.5, "%"),
                        "windows": q(400, "count"), "disagreements": q(6, "count"),
                        "source": "../shared/data (korean, ravdess)",
                        "by_corpus": {"korean": {"argmax_agreement": q(97.0, "%")},
                                      "ravdess": {"argmax_agreement": q(100.0, "%")}}}}}}
    rows = {t["id"]: t for t in evaluate_targets(report)}
    agree = rows["shipped_int8_agreement"]
    assert agree["pass"] is False and agree["measured"]["value"] == 98.5
    assert "whisper-tiny" in agree["target"] and "lowest on korean (97.0 %)" in agree["note"]
    assert rows["shipped_int8_not_slower"]["pass"] is True
    report["latency"]["agreement"]["shipped"]["argmax_agreement"] = q(99.5, "%")
    assert {t["id"]: t for t in evaluate_targets(report)}["shipped_int8_agreement"]["pass"]
    del report["latency"]["agreement"]["shipped"]
    row = {t["id"]: t for t in evaluate_targets(report)}["shipped_int8_agreement"]
    assert row["pass"] is None and "shipped-int8 and shipped-fp32" in row["note"]

    report["latency"]["agreement"]["shipped"] = {"status": "ok",
                                                 "argmax_agreement": q(99.5, "%"),
                                                 "windows": q(400, "count")}
    cont = continuous_speech(report)["models"]
    assert cont["shipped-int8"]["rtf"] == q(20.0 / 8000, "s/s")
    assert cont["shipped-int8"]["core_share"] == q(0.25, "% of one core")
    assert cont["shipped-fp32"]["int8_fp32_agreement"] == q(99.5, "%")
    duty = duty_verdicts(report, 400)[0]
    assert "0.25 % of one core at continuous speech" in duty["reason"], duty
