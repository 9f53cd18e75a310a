"""PNG plots of a report (matplotlib, Agg backend): latency, RSS over time, temperature."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from benchmarks.ram import RAM_SETTINGS

log = logging.getLogger(__name__)

PLOTS = {"latency": "latency.png", "rss": "rss.png", "thermal": "thermal.png"}


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _empty(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=11)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_latency(report: dict[str, Any], path: Path) -> None:
    plt = _plt()
    models = (report.get("latency") or {}).get("models") or {}
    data, labels = [], []
    for name, m in models.items():
        for t, st in (m.get("threads") or {}).items():
            values = [v for v in st["samples"]["values"] if v is not None]
            if values:
                data.append(values)
                labels.append(f"{name}\n{t} thr")
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(data) + 2), 4.5))
    if data:
        ax.boxplot(data, whis=(5, 95), showfliers=True)
        ax.set_xticks(range(1, len(labels) + 1), labels, fontsize=7, rotation=30, ha="right")
        ax.set_yscale("log")
        ax.set_ylabel("latency per window (ms, log scale)")
        ax.set_title("Latency per window (box: quartiles, whiskers: p5-p95)")
        ax.grid(axis="y", alpha=0.3)
    else:
        _empty(ax, "no latency measured")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_rss(report: dict[str, Any], path: Path) -> None:
    plt = _plt()
    models = (report.get("ram") or {}).get("models") or {}
    fig, ax = plt.subplots(figsize=(8, 4.5))
    drawn = 0
    for name, m in models.items():
        for key in RAM_SETTINGS:
            tl = (m.get(key) or {}).get("timeline")
            if not tl or not tl["t"]["values"]:
                continue
            ax.plot(tl["t"]["values"], tl["rss"]["values"], label=f"{name} ({key})",
                    linestyle={"arena_off": "--", "low_memory": ":"}.get(key, "-"))
            drawn += 1
    if drawn:
        ax.set_xlabel("time since process start (s)")
        ax.set_ylabel("RSS (MiB)")
        ax.set_title("RSS of a fresh process per model: load, first window, N windows")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    else:
        _empty(ax, "no RSS measured")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_thermal(report: dict[str, Any], path: Path) -> None:
    plt = _plt()
    th = report.get("thermal") or {}
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 6))
    smp = th.get("samples")
    if not smp:
        _empty(ax1, f"thermal run {th.get('status', 'not run')}: {th.get('reason', '')}")
        _empty(ax2, "")
    else:
        t = smp["t"]["values"]
        temps = smp["temperature"]["values"]
        freqs = smp["frequency"]["values"]
        has_t = any(v is not None for v in temps)
        has_f = any(v is not None for v in freqs)
        if has_t:
            ax1.plot(t, temps, color="tab:red", label="CPU temperature (°C)")
            ax1.set_ylabel("CPU temperature (°C)", color="tab:red")
            ax1.set_xlabel("time (s)")
            ax1.legend(loc="upper left", fontsize=7)
        if has_f:
            ax1b = ax1.twinx() if has_t else ax1
            ax1b.plot(t, freqs, color="tab:blue", label="mean CPU frequency (MHz)")
            ax1b.set_ylabel("mean CPU frequency (MHz)", color="tab:blue")
            ax1.set_xlabel("time (s)")
            ax1b.legend(loc="upper right", fontsize=7)
        if not (has_t or has_f):
            _empty(ax1, "temperature: no sensor\nfrequency: no sensor")
        elif not (has_t and has_f):
            ax1.set_title(("frequency" if has_t else "temperature") + ": no sensor", fontsize=9)
        ax2.plot(t, smp["cpu"]["values"], color="tab:green", label="CPU (% of one core)")
        ax2.set_ylabel("% of one core", color="tab:green")
        ax2r = ax2.twinx()
        rss = [v for v in smp["rss"]["values"] if v is not None]
        ax2r.plot(t, smp["rss"]["values"], color="tab:purple", label="RSS (MiB)")
        ax2r.set_ylabel("RSS (MiB)", color="tab:purple")
        if rss and max(rss) - min(rss) < 10:  # a flat line, not a 0.1-MiB "jump"
            mid = (max(rss) + min(rss)) / 2
            ax2r.set_ylim(mid - 10, mid + 10)
        ax2.set_xlabel("time (s)")
        ax2.legend(loc="upper left", fontsize=7)
        ax2r.legend(loc="upper right", fontsize=7)
        fig.suptitle(f"Sustained load: {th.get('model')}; temperature and frequency over time")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_plots(report: dict[str, Any], out: Path) -> dict[str, str]:
    """All plots into ``out``; returns {kind: file name}."""
    out.mkdir(parents=True, exist_ok=True)
    plot_latency(report, out / PLOTS["latency"])
    plot_rss(report, out / PLOTS["rss"])
    plot_thermal(report, out / PLOTS["thermal"])
    return dict(PLOTS)
