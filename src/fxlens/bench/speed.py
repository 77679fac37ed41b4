"""`fxlens bench fx`: how fast each effect and an 8-effect chain run, forward and forward+backward, against peers;
`fxlens bench speed`: the effects encoder (`bench_embedding`), the recognition features (`bench_features`) and
`fxlens analyze` (`bench_analyze`).

Speed is reported as x-real-time: seconds of audio processed per second of wall time, counting every item of
the batch (batch 16 x 10 s in 1 s is 160x). Each figure is the median of `repeats` timed runs after one warm-up.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from fxlens.atomic import atomic_path, write_text_atomic
from fxlens.bench.peers import dasp_processor, pedalboard_processor
from fxlens.fx import effect_names, get_effect
from fxlens.fx.chain import DEFAULT_POOL, RandomChain

SR = 44100
# Targets from the foundation issue (docs/benchmarks.md keeps the measured figures).
TARGET_FORWARD_B1 = 100.0
TARGET_CHAIN = 50.0
TARGET_REVERB = 20.0
WITHIN_PEDALBOARD = ("parametric_eq", "compressor", "delay", "distortion")


@dataclass
class SpeedRow:
    name: str
    forward: dict[int, float] = field(default_factory=dict)
    forward_backward: dict[int, float] = field(default_factory=dict)
    pedalboard: float | None = None
    dasp: float | None = None
    dasp_forward_backward: float | None = None


def _median_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up (allocations, kernels, numba compilation)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _test_signal(batch: int, seconds: float, seed: int = 0) -> torch.Tensor:
    """Band-limited noise bursts: a stand-in for music with a realistic crest factor."""
    g = torch.Generator().manual_seed(seed)
    T = int(seconds * SR)
    x = torch.randn(batch, 2, T, generator=g) * 0.1
    env = (torch.sin(torch.linspace(0, 40 * torch.pi, T)) > 0).float() * 0.8 + 0.2
    return (x * env).contiguous()


def _time_module(process: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], n_params: int, batch: int,
                 seconds: float, repeats: int, backward: bool) -> float:
    x0 = _test_signal(batch, seconds)
    controls = torch.rand(batch, n_params, generator=torch.Generator().manual_seed(1))

    def forward():
        with torch.no_grad():
            process(x0, controls)

    def forward_backward():
        x = x0.clone().requires_grad_(True)
        c = controls.clone().requires_grad_(True)
        process(x, c).square().mean().backward()

    t = _median_seconds(forward_backward if backward else forward, repeats)
    return batch * seconds / t


def bench_fx(
    seconds: float = 10.0,
    batches: tuple[int, ...] = (1, 16),
    repeats: int = 3,
    effects: list[str] | None = None,
    backward: bool = True,
    on_row: Callable[[SpeedRow], None] | None = None,
) -> list[SpeedRow]:
    """Time every effect (or `effects`) and the 8-effect default chain; returns one row each."""
    names = effects or effect_names()
    rows = []
    for name in names + ["chain8"]:
        row = SpeedRow(name)
        if name == "chain8":
            # All eight effects of the default training pool, every one switched on, random settings.
            rc = RandomChain(DEFAULT_POOL, probabilities=1.0)

            def process(x, c, rc=rc):
                return rc(x, SR, seed=0)[0]

            n_params = 0
        else:
            effect = get_effect(name)

            def process(x, c, effect=effect):
                return effect(x, SR, c)

            n_params = effect.n_params
        for b in batches:
            row.forward[b] = _time_module(process, n_params, b, seconds, repeats, backward=False)
            if backward:
                row.forward_backward[b] = _time_module(process, n_params, b, seconds, repeats, backward=True)
        peer = pedalboard_processor(name)
        if peer is not None:
            x = _test_signal(1, seconds)[0].numpy()
            row.pedalboard = seconds / _median_seconds(lambda: peer(x, SR), repeats)
        dasp = dasp_processor(name)
        if dasp is not None:
            x = _test_signal(1, seconds)
            with torch.no_grad():
                row.dasp = seconds / _median_seconds(lambda: dasp(x, SR), repeats)
            if backward:
                def fb():
                    xg = x.clone().requires_grad_(True)
                    dasp(xg, SR).square().mean().backward()
                row.dasp_forward_backward = seconds / _median_seconds(fb, repeats)
        rows.append(row)
        if on_row:
            on_row(row)
    return rows


def verdicts(row: SpeedRow) -> list[str]:
    """Which of the issue's speed targets this row meets (or misses)."""
    out = []
    fwd1 = row.forward.get(1)
    if fwd1 is None:
        return out
    if row.name == "chain8":
        out.append(f"chain>={TARGET_CHAIN:.0f}x " + ("ok" if fwd1 >= TARGET_CHAIN else "MISSED"))
    elif row.name == "reverb":
        out.append(f">={TARGET_REVERB:.0f}x " + ("ok" if fwd1 >= TARGET_REVERB else "MISSED"))
    else:
        out.append(f">={TARGET_FORWARD_B1:.0f}x " + ("ok" if fwd1 >= TARGET_FORWARD_B1 else "MISSED"))
    if row.name in WITHIN_PEDALBOARD and row.pedalboard:
        out.append("within 3x of pedalboard " + ("ok" if fwd1 * 3 >= row.pedalboard else "MISSED"))
    return out


def load_average() -> float | None:
    """The 1-minute load average (runnable processes), or None where the platform has none."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def machine_description() -> dict:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "load_average_1min": load_average(),
        "date": time.strftime("%Y-%m-%d"),
    }


def busy_cpu_warning() -> str | None:
    """One line when other work already keeps at least half the CPUs busy (1-minute load average), else None.

    Why it matters: torch's threads wait on each other, so one other busy process on a 2-core machine cut the
    figures of `bench fx` 10-30x below the idle ones (docs/benchmarks.md, 2026-12-05: chain8 3x instead of 89x).
    """
    load, cpus = load_average(), os.cpu_count() or 1
    if load is None or load < 0.5 * cpus:
        return None
    return (f"warning: the CPU is already busy (load {load:.1f} on {cpus} CPUs): timings will be lower than on an "
            "idle machine; compare figures only within one run, or pin threads (OMP_NUM_THREADS=1)")


def write_json(path: str | Path, rows: list[SpeedRow], settings: dict) -> Path:
    payload = {"benchmark": "fx", "machine": machine_description(), "settings": settings,
               "rows": [asdict(r) | {"targets": verdicts(r)} for r in rows]}
    return write_text_atomic(path, json.dumps(payload, indent=2) + "\n")


def format_xrt(v: float | None) -> str:
    """x-real-time for tables: '-' when missing, two decimals below 10x (dasp's reverb runs at 0.3x)."""
    if v is None:
        return "-"
    return f"{v:.2f}x" if v < 10 else f"{v:,.0f}x"


def markdown_table(rows: list[SpeedRow]) -> str:
    """The results as a Markdown table (for docs/benchmarks.md)."""
    batches = sorted({b for r in rows for b in r.forward})

    fmt = format_xrt
    head = ["effect"] + [f"fwd b{b}" for b in batches] + [f"fwd+bwd b{b}" for b in batches]
    head += ["pedalboard fwd b1", "dasp fwd b1", "dasp fwd+bwd b1", "targets"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [f"`{r.name}`"] + [fmt(r.forward.get(b)) for b in batches]
        cells += [fmt(r.forward_backward.get(b)) for b in batches]
        cells += [fmt(r.pedalboard), fmt(r.dasp), fmt(r.dasp_forward_backward), "; ".join(verdicts(r))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_speed(rows: list[SpeedRow], path: str | Path) -> Path:
    """Horizontal bars (log scale): fxlens forward and forward+backward at batch 1 beside pedalboard's forward."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r.name for r in rows]
    y = np.arange(len(rows))
    series = [
        ("fxlens forward", [r.forward.get(1) for r in rows], "tab:blue"),
        ("fxlens forward+backward", [r.forward_backward.get(1) for r in rows], "tab:cyan"),
        ("pedalboard forward", [r.pedalboard for r in rows], "tab:orange"),
        ("dasp-pytorch forward", [r.dasp for r in rows], "tab:gray"),
    ]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.5))
    height = 0.2
    for k, (label, values, color) in enumerate(series):
        vals = [np.nan if v is None else v for v in values]
        ax.barh(y + (k - 1.5) * height, vals, height, label=label, color=color)
    ax.axvline(TARGET_FORWARD_B1, color="k", lw=0.8, ls="--", label=f"{TARGET_FORWARD_B1:.0f}x target")
    ax.set_xscale("log")
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set_xlabel("x real time (10 s stereo 44.1 kHz, batch 1; higher is faster)")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format=Path(path).suffix.lstrip(".") or "png")
    plt.close(fig)
    return Path(path)


# ------------------------------------------------------------------------------------------------------------------
# `fxlens bench speed`: the effects encoder
# ------------------------------------------------------------------------------------------------------------------

TARGET_EMBED = 100.0  # x real time for the small encoder on this CPU (issue 4)


def bench_embedding(model=None, seconds: float = 10.0, batches: tuple[int, ...] = (1, 8), repeats: int = 3,
                    query_text: str = "bass") -> list[dict]:
    """x-real-time of `FxEncoder.embed` (mixture level, text query, audio query) on `seconds`-long stereo clips,
    including the log-mel front end and the chunking/pooling (audio already at 44.1 kHz, so no resampling)."""
    from fxlens.models.encoder import load_encoder

    enc = model if model is not None else load_encoder()
    rows = []
    for b in batches:
        x = _test_signal(b, seconds)
        q = _test_signal(1, min(seconds, 4.0), seed=1)
        cases = {"mixture": lambda: enc.embed(x, SR), f"text query '{query_text}'": lambda: enc.embed(x, SR, query_text),
                 "audio query (4 s example)": lambda: enc.embed(x, SR, q)}
        for name, fn in cases.items():
            t = _median_seconds(fn, repeats)
            rows.append({"case": name, "batch": b, "seconds": seconds, "x_real_time": b * seconds / t})
    return rows


def cases_markdown(rows: list[dict], what: str = "embedding") -> str:
    """A case x batch table of x-real-time figures (`bench_embedding`'s or `bench_features`'s rows)."""
    batches = sorted({r["batch"] for r in rows})
    cases = list(dict.fromkeys(r["case"] for r in rows))
    lines = [f"| {what} | " + " | ".join(f"batch {b}" for b in batches) + " |",
             "|---|" + "---:|" * len(batches)]
    for c in cases:
        cells = [next((format_xrt(r["x_real_time"]) for r in rows if r["case"] == c and r["batch"] == b), "-")
                 for b in batches]
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


TARGET_FEATURES = 40.0  # x real time per 1.5 s clip for the recognition features (issue 6; AutoFX reports 43x)


def bench_features(seconds: float = 1.5, batches: tuple[int, ...] = (1, 16), repeats: int = 3,
                   exported: bool = True) -> list[dict]:
    """x-real-time of the recognition feature sets (`fxlens.features.sets.FEATURE_SETS`) on `seconds`-long stereo
    44.1 kHz clips: eager (`compute_features`, soxr resampling) and, with `exported`, the `torch.export` program of
    `fxlens.features.export` (exported once per batch size; export time not counted)."""
    import tempfile

    from fxlens.features.export import export_features, load_exported_features
    from fxlens.features.sets import FEATURE_SETS, compute_features

    rows = []
    for b in batches:
        x = _test_signal(b, seconds)
        for name in FEATURE_SETS:
            cases = {f"{name} (eager)": lambda: compute_features(x, SR, name)}
            if exported:
                with tempfile.TemporaryDirectory() as tmp:
                    export_features(Path(tmp) / "f.pt2", name, seconds=seconds, batch=b)
                    run = load_exported_features(Path(tmp) / "f.pt2")
                cases[f"{name} (exported program)"] = lambda: run(x)
            for case, fn in cases.items():
                t = _median_seconds(fn, repeats)
                rows.append({"case": case, "batch": b, "seconds": seconds, "x_real_time": b * seconds / t})
    return rows


def bench_match(lengths: tuple[float, ...] = (8.0, 180.0), repeats: int = 1) -> list[dict]:
    """Seconds and x-real-time of `fxlens.match` with its defaults (20 gradient steps on an 8 s excerpt through the
    shipped encoder, loaded once beforehand and not counted, then the whole file rendered and level-matched) on
    stereo 44.1 kHz files of each length; the reference is another 8 s signal through a fixed distortion. The search
    costs the same for any length; the final render grows with it."""
    from fxlens.fx.chain import Chain
    from fxlens.models.encoder import load_encoder
    from fxlens.tasks.match import match

    enc = load_encoder()
    ref = Chain([("distortion", {"drive_db": 20.0})])(_test_signal(1, 8.0, seed=1), SR)[0]
    rows = []
    for seconds in lengths:
        x = _test_signal(1, seconds)[0]
        t = _median_seconds(lambda: match(x, SR, ref, SR, model=enc), repeats)
        rows.append({"case": f"match, {seconds:g} s file (20 steps on 8 s)", "batch": 1, "seconds": seconds,
                     "wall_seconds": t, "x_real_time": seconds / t})
    return rows


def bench_analyze(lengths: tuple[float, ...] = (10.0, 180.0), repeats: int = 3) -> list[dict]:
    """x-real-time of `fxlens.analyze` (shipped models, loaded once beforehand and not counted) on stereo 44.1 kHz
    clips of each length in seconds: windowing, features, recognizer, estimator, the periods read from the audio.
    A recording yields at most 32 windows, so long files cost little more than short ones."""
    from fxlens.tasks.analyze import analyze, load_estimator, load_recognizer

    load_recognizer()
    load_estimator()
    rows = []
    for seconds in lengths:
        x = _test_signal(1, seconds)[0]
        t = _median_seconds(lambda: analyze(x, SR), repeats)
        rows.append({"case": f"analyze, {seconds:g} s recording", "batch": 1, "seconds": seconds,
                     "x_real_time": seconds / t})
    return rows

