"""`fxlens <group> <command>`: parses arguments and calls tasks, bench and train; nothing else lives here.

Every `FxlensError` (bad input) becomes one line on stderr and exit code 1 — never a traceback.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from fxlens.errors import FxlensError

console = Console()
err_console = Console(stderr=True)

app = typer.Typer(
    help="fxlens: hear audio effects — which are on a recording, how they are set, and how to put them on yours.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
fx_app = typer.Typer(help="Effects: list them, put them on audio.", no_args_is_help=True)
data_app = typer.Typer(help="Data: render dry multitrack songs, read stem datasets, Fx-normalize, real recordings.",
                       no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks: tables with baselines side by side, JSON beside them.", no_args_is_help=True)


def _version(value: bool) -> None:
    if value:
        from fxlens import __version__

        console.print(f"fxlens {__version__}")
        raise typer.Exit()


@app.callback()
def _main_options(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """fxlens: hear audio effects — which are on a recording, how they are set, and how to put them on yours."""


app.add_typer(fx_app, name="fx")
app.add_typer(data_app, name="data")
app.add_typer(bench_app, name="bench")
train_app = typer.Typer(help="Training: every shipped model is made by one of these commands.", no_args_is_help=True)
app.add_typer(train_app, name="train")
features_app = typer.Typer(help="Features: the recognition features as a program that runs without fxlens.",
                           no_args_is_help=True)
app.add_typer(features_app, name="features")


@features_app.command("export")
def features_export(
    out: Path = typer.Argument(..., help="The program file to write (.pt2; a .json with its shape and names beside)."),
    feature_set: str = typer.Option("fxlens-406", "--feature-set", help="autofx-163 or fxlens-406 (what the shipped "
                                    "recognizer reads)."),
    seconds: float = typer.Option(1.5, help="Window length the program reads (the shape is fixed)."),
    batch: int = typer.Option(1, help="Windows per call (the shape is fixed)."),
) -> None:
    """Export a feature set as a torch.export program: stereo 44.1 kHz windows in, features out; load it with
    torch.export.load(path).module() (no fxlens needed)."""
    from fxlens.features.export import export_features

    with console.status("exporting (a few seconds)"):
        info = export_features(out, feature_set, seconds=seconds, batch=batch)
    console.print(f"wrote {out} ({info['n_features']} features of input {tuple(info['input_shape'])} at "
                  f"{info['sample_rate']} Hz) and {out.with_suffix('.json')}")


@app.command()
def info(file: Path = typer.Argument(..., help="An audio file (wav, flac, ogg, mp3, opus).")) -> None:
    """Format, sample rate, channels, duration, peak dBFS and integrated loudness (BS.1770-4) of a file."""
    from fxlens import audio
    from fxlens.report import db_str, info_table

    meta = audio.info(file)
    x, sr = audio.load_with_rate(file, sample_rate=None, stereo=False)
    loudness = float(audio.integrated_loudness(x, sr)[0]) if x.shape[-1] >= int(0.4 * sr) else float("-inf")
    rows = [
        ("format", f"{meta.format} ({meta.subtype})"),
        ("sample rate", f"{meta.sample_rate} Hz"),
        ("channels", str(meta.channels)),
        ("duration", f"{meta.duration_s:.3f} s ({meta.frames} frames)"),
        ("peak", db_str(float(audio.peak_db(x)[0]), "dBFS")),
        ("integrated loudness", db_str(loudness, "LUFS")),
    ]
    console.print(info_table(rows, title=file.name))


@app.command()
def demo(
    out_dir: Path = typer.Option(Path("fxlens-demo"), "--out-dir", help="Where to write dry.wav, wet.wav and the preset."),
    seed: int = typer.Option(0, help="Seed of the clip and of the chain."),
    seconds: float = typer.Option(8.0, help="Length of the demo clip."),
) -> None:
    """The main job on shipped defaults: render a dry clip, apply a random chain, print it, write audio + preset."""
    from fxlens.report import preset_table
    from fxlens.tasks.demo import run_demo

    if not 1.0 <= seconds <= 120.0:
        raise FxlensError("--seconds must be between 1 and 120")
    with console.status("rendering a dry multitrack clip with fluidsynth and applying a random chain..."):
        result = run_demo(out_dir, seed=seed, seconds=seconds)
    console.print(preset_table(result.preset, title=f"Random effect chain (seed {seed})"))
    console.print(f"dry {result.dry_lufs:.1f} LUFS -> wet {result.wet_lufs:.1f} LUFS, {result.seconds:.1f} s")
    for p in (result.dry_path, result.wet_path, result.preset_path):
        console.print(f"wrote [bold]{p}[/]")
    console.print("Put the same chain on your own audio: "
                  f"[bold]fxlens fx apply YOUR.wav OUT.wav --preset {result.preset_path}[/]")


@fx_app.command("list")
def fx_list(json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """Every effect, its parameters, units, ranges, scales and defaults."""
    import json

    from fxlens.fx import effect_names, get_effect
    from fxlens.report import effects_table

    effects = [get_effect(n) for n in effect_names()]
    if json_out:
        print(json.dumps({e.name: {"description": e.description, "config": e.config(),
                                   "params": [s.to_dict() for s in e.specs]} for e in effects}, indent=2))
    else:
        console.print(effects_table(effects))


FEATURE_WORKERS_HELP = ("Processes computing the features and log-mels of clips not yet cached (default 1: this "
                        "process, all its torch threads; N > 1: N processes of one thread each, for machines with "
                        "many cores). The results do not depend on it.")
BASELINES_HELP = ("Comma list of the baselines to run beside the encoders: random, mfcc (MFCC + spectral "
                  "statistics), logmel (log-mel statistics), bands (band statistics), cnn (a random CNN); 'none' "
                  "for the encoders alone (default: all five).")


def _check_workers(workers: int) -> None:
    """`--workers` checked before any progress bar is drawn (a bad value is one line, nothing else)."""
    if workers < 1:
        raise FxlensError(f"--workers must be >= 1, got {workers}")


def _baseline_names(text: Optional[str]) -> Optional[list[str]]:
    """`--baselines` as a list of short names (None: all; 'none': an empty list)."""
    if text is not None and text.strip().lower() == "none":
        return []
    return _split_names(text, "--baselines")


def _split_names(text: Optional[str], option: str = "--effects") -> Optional[list[str]]:
    """A comma-separated option as a list of names (None when not given); an empty list is an error."""
    if text is None:
        return None
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise FxlensError(f"{option} needs at least one name")
    return names


@fx_app.command("apply")
def fx_apply(
    input: Path = typer.Argument(..., help="Input audio file."),
    output: Path = typer.Argument(..., help="Output .wav or .flac; its preset is written beside it as <name>.preset.json."),
    preset: Optional[Path] = typer.Option(None, "--preset", "-p", help="Preset JSON to apply."),
    random: bool = typer.Option(False, "--random", help="Apply a random chain instead of a preset."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random chain."),
    effects: Optional[str] = typer.Option(None, "--effects", help="Comma-separated pool for --random (default: all main effects)."),
    max_effects: Optional[int] = typer.Option(None, "--max-effects", help="At most this many effects with --random."),
    tail: bool = typer.Option(False, "--tail", help="Keep delay/reverb tails (the output grows by their length)."),
) -> None:
    """Put effects on a file, from a preset or a random chain; writes the audio and the exact preset used."""
    from fxlens.report import preset_table
    from fxlens.tasks.process import apply_to_file

    if (preset is None) == (not random):
        raise FxlensError("give exactly one of --preset P.json or --random")
    if (effects is not None or max_effects is not None) and not random:
        raise FxlensError("--effects and --max-effects only go with --random")
    result = apply_to_file(input, output, preset_file=preset, random_effects=_split_names(effects), seed=seed,
                           keep_tail=tail, max_effects=max_effects)
    console.print(preset_table(result.preset))
    console.print(f"wrote [bold]{result.output}[/] ({result.seconds:.2f} s) and [bold]{result.preset_path}[/]")


DATA_DIR_HELP = "Data folder (default: $FXLENS_DATA or ~/.cache/fxlens)."


def _data_dir(data_dir: Optional[Path]) -> Path:
    from fxlens.data.paths import default_data_dir

    return data_dir if data_dir is not None else default_data_dir()


@data_app.command("render")
def data_render(
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help=DATA_DIR_HELP),
    dataset: str = typer.Option("fxlens-dry", help="Dataset folder name under the data folder."),
    hours: float = typer.Option(3.0, help="Hours of music to plan (>= 300 songs at the default 3 h)."),
    seed: int = typer.Option(0, help="Decides every song: splits, music, soundfonts."),
    workers: int = typer.Option(2, help="Parallel processes, one synthesizer each."),
    min_seconds: float = typer.Option(20.0, help="Shortest song."),
    max_seconds: float = typer.Option(45.0, help="Longest song."),
) -> None:
    """Render dry multitrack songs (procedural + music21 arrangements) to per-instrument FLAC stems. Resumable."""
    from fxlens.data.render import render_dataset

    summary = render_dataset(_data_dir(data_dir), dataset=dataset, hours=hours, seed=seed, workers=workers,
                             song_seconds=(min_seconds, max_seconds), progress=True)
    splits = ", ".join(f"{k} {v}" for k, v in summary["splits"].items())
    console.print(f"{summary['songs']} songs ({summary['hours']:.2f} h of music; {splits}) in [bold]{summary['root']}[/]")
    console.print(f"this call: rendered {summary['rendered']}, skipped {summary['skipped']} finished songs, "
                  f"{summary['seconds']:.0f} s wall, {summary['x_real_time']:.1f}x real time")
    if summary.get("dropped_stems"):
        console.print(f"dropped {len(summary['dropped_stems'])} silent stems (listed in dataset.json)")


@data_app.command("notes")
def data_notes(
    out: Path = typer.Argument(..., help="Output folder (fxlens stem layout: <split>/<song>/<instrument>.flac)."),
    takes: int = typer.Option(3, help="Takes of every (soundfont, program, string) in the in-domain splits."),
    seed: int = typer.Option(0, help="Decides the splits and the velocities."),
) -> None:
    """Single guitar notes, open string to 12th fret on six strings, as AutoFX's data (IDMT-SMT) records them:
    stems for `fxlens data fxset --onset-fraction 1`. Resumable."""
    from rich.progress import Progress

    from fxlens.data.notes import render_notes

    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("notes", total=None)
        s = render_notes(out, takes=takes, seed=seed,
                         progress=lambda d, n: progress.update(task, completed=d, total=n))
    splits = ", ".join(f"{k} {v}" for k, v in s["splits"].items())
    console.print(f"{s['songs']} strings of {s['notes'] // s['songs']} notes ({splits}; {s['rendered']} rendered, "
                  f"{s['seconds']:.0f} s) -> [bold]{s['root']}[/]")


@data_app.command("real")
def data_real() -> None:
    """The real recordings installed by the set-up (Frets on Fire mixes + guitar stems, Wesnoth music), with licences."""
    from rich.table import Table

    from fxlens.data.real import list_real_recordings

    recordings = list_real_recordings()
    table = Table(title=f"{len(recordings)} real recordings")
    for col in ("collection", "name", "stems", "duration", "licence", "package"):
        table.add_column(col)
    for r in recordings:
        table.add_row(r.collection, r.name, ", ".join(r.stems), f"{r.duration_s:.0f} s", r.licence, r.package)
    console.print(table)


@data_app.command("music")
def data_music(
    out: Path = typer.Argument(..., help="Folder for the tracks dataset (links to the installed files + tracks.json)."),
    collection: Optional[list[str]] = typer.Option(None, "--collection", help="Only these training collections "
                                                   "(repeatable: hedgewars, supertux, warzone2100; default all)."),
) -> None:
    """Real game soundtracks to train on (full mixes, no stems), gathered as a tracks dataset: `fxlens data pairs`
    and `bench retrieval --split val` read it. The evaluation recordings (`fxlens data real`) are never among them."""
    from collections import Counter

    from rich.table import Table

    from fxlens.data.real import link_training_music
    from fxlens.data.stems import open_dataset

    folder, n = link_training_music(out, collection)
    songs = open_dataset(folder).songs()
    counts = Counter((s.song_id.split("/", 1)[0], s.split) for s in songs)  # (collection, split) -> tracks
    table = Table(title=f"{n} tracks in {folder}")
    for col in ("collection", "tracks", "minutes", "train / val / test tracks", "licence", "package"):
        table.add_column(col)
    for c in songs[0].meta["collections"]:  # tracks.json, as the dataset read it
        splits = " / ".join(str(counts[c["name"], sp]) for sp in ("train", "val", "test"))
        table.add_row(c["name"], str(c["tracks"]), f"{c['minutes']:.0f}", splits, c["licence"], c["package"])
    console.print(table)


def _progress_callback(progress, task_id):
    """A (done, total) callback that moves one rich progress task."""
    def update(done: int, total: int) -> None:
        progress.update(task_id, completed=done, total=total)

    return update


def _named_progress(progress):
    """A (name, done, total) callback that keeps one rich progress task per name."""
    tasks: dict = {}

    def update(name: str, done: int, total: int) -> None:
        if name not in tasks:
            tasks[name] = progress.add_task(name, total=total)
        progress.update(tasks[name], completed=done, total=total)

    return update


@data_app.command("fxnorm-stats")
def data_fxnorm_stats(
    dataset: Path = typer.Argument(..., help="A stem dataset folder (fxlens, MUSDB18-HQ, MoisesDB or a plain folder)."),
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the statistics JSON."),
    layout: str = typer.Option("auto", help="auto, fxlens, musdb, moisesdb or folder."),
    split: Optional[str] = typer.Option(None, help="Only this split (e.g. train)."),
    max_songs: Optional[int] = typer.Option(None, help="Use at most this many songs."),
) -> None:
    """Per-instrument Fx-normalization statistics (mean spectrum, dynamics, stereo, loudness) of a stem dataset."""
    from rich.progress import Progress

    from fxlens.data.fxnorm import compute_stats
    from fxlens.data.stems import open_dataset

    ds = open_dataset(dataset, layout=layout, split=split)
    with Progress(console=console) as progress:
        task = progress.add_task("measuring stems", total=None)
        stats = compute_stats(ds, max_songs=max_songs, progress=_progress_callback(progress, task))
    stats.save(out)
    console.print(f"statistics of {len(stats.instruments)} instruments ({', '.join(sorted(stats.instruments))}) -> [bold]{out}[/]")


@data_app.command("fxnorm")
def data_fxnorm(
    dataset: Path = typer.Argument(..., help="A stem dataset folder (fxlens, MUSDB18-HQ, MoisesDB or a plain folder)."),
    stats: Path = typer.Option(..., "--stats", help="Statistics JSON from `fxlens data fxnorm-stats`."),
    out_dir: Path = typer.Option(..., "--out-dir", help="Where to write the normalized stems (fxlens layout)."),
    layout: str = typer.Option("auto", help="auto, fxlens, musdb, moisesdb or folder."),
    split: Optional[str] = typer.Option(None, help="Only this split."),
) -> None:
    """Fx-normalize every stem (loudness, EQ, dynamics, stereo; reverb left alone) toward the dataset statistics."""
    from rich.progress import Progress

    from fxlens.data.fxnorm import FxNormStats, normalize_dataset
    from fxlens.data.stems import open_dataset

    ds = open_dataset(dataset, layout=layout, split=split)
    st = FxNormStats.load(stats)
    with Progress(console=console) as progress:
        task = progress.add_task("normalizing songs", total=None)
        written = normalize_dataset(ds, st, out_dir, progress=_progress_callback(progress, task))
    console.print(f"{len(written)} songs written under [bold]{out_dir}[/]")


@data_app.command("fxset")
def data_fxset(
    stems: Path = typer.Argument(..., help="A dry stem dataset (e.g. <data-dir>/fxlens-dry from `fxlens data render`)."),
    out: Path = typer.Argument(..., help="Output folder: <split>/<clip_id>.flac + <split>/labels.jsonl."),
    clips_per_class: int = typer.Option(100, help="Clips per class and split."),
    seconds: float = typer.Option(1.5, help="Clip length."),
    seed: int = typer.Option(0, help="Decides every clip."),
    chains: bool = typer.Option(True, help="Also render 2-3 effect chains (multi-label)."),
    implementation: str = typer.Option("fxlens", help="fxlens, or pedalboard for the cross-domain set (test only)."),
    splits: Optional[str] = typer.Option(None, help="Only these splits, comma-separated (e.g. train)."),
    chain_clips: Optional[int] = typer.Option(None, help="Chain clips per split (default: 2 x clips per class)."),
    randomize_internals: bool = typer.Option(
        False, "--randomize-internals",
        help="Draw chorus/flanger/phaser internals (sweep widths, phaser stages, stereo phase, mix law) and the "
             "amp stages of overdrive/distortion/fuzz (cabinet, input high-pass, bias, mid peak) per clip: domain "
             "randomization for training sets."),
    randomize_classes: Optional[str] = typer.Option(
        None, help="Randomize only these classes' internals, comma-separated (e.g. overdrive,distortion,fuzz); "
                   "implies --randomize-internals."),
    workers: int = typer.Option(2, help="Processes rendering clips side by side (the set does not depend on it)."),
    classes: Optional[str] = typer.Option(
        None, help="Only these classes, comma-separated (default: the 14 recognizer classes; AutoFX's parameter "
                   "protocol: autofx_modulation,autofx_delay,autofx_distortion)."),
    onset_fraction: float = typer.Option(0.5, help="Share of clips cut at a note or chord onset (1: all, as AutoFX's "
                                                   "single notes)."),
    seen_sources: bool = typer.Option(
        False, "--seen-sources",
        help="Cut train, val and test clips from the songs of all three (AutoFX's random split of processed files: "
             "the dry sources of val and test are also in train, under other settings). ood keeps its own."),
) -> None:
    """A labelled set of effect clips (dry, delay, reverb, modulation, tremolo, distortion, compression, EQ, chains).

    Every clip has its own seed, so a larger --clips-per-class keeps the clips of a smaller run and adds to them."""
    from fxlens.data.fxset import build_fxset

    if implementation not in ("fxlens", "pedalboard"):
        raise FxlensError(f"--implementation must be fxlens or pedalboard, got {implementation!r}")
    if clips_per_class < 0 or (chain_clips is not None and chain_clips < 0):
        raise FxlensError("--clips-per-class and --chain-clips must be >= 0")
    if not 0.0 <= onset_fraction <= 1.0:
        raise FxlensError(f"--onset-fraction must be within 0..1, got {onset_fraction}")
    split_list = None if splits is None else [t.strip() for t in splits.split(",") if t.strip()]
    class_list = None if classes is None else [t.strip() for t in classes.split(",") if t.strip()]
    if class_list == []:
        raise FxlensError("--classes needs at least one class name")
    randomize = randomize_internals
    if randomize_classes is not None:
        randomize = [t.strip() for t in randomize_classes.split(",") if t.strip()]
        if not randomize:
            raise FxlensError("--randomize-classes needs at least one class name")
    s = build_fxset(stems, out, clips_per_class, seconds, seed, chains, implementation, progress=True,
                    chain_clips=chain_clips, splits=split_list, randomize_internals=randomize, workers=workers,
                    classes=class_list, onset_fraction=onset_fraction, seen_sources=seen_sources)
    console.print(f"{s['clips']} clips ({s['rendered']} new, {s['clips_per_s']} clips/s) -> [bold]{s['out_dir']}[/]")


@train_app.command("recognizer")
def train_recognizer_command(
    fxset: Path = typer.Argument(..., help="An `fxlens data fxset` folder (train/val/test/ood)."),
    out: Path = typer.Option(..., "--out", "-o", help="Checkpoint folder to write."),
    cross_domain: Optional[Path] = typer.Option(None, help="A pedalboard fxset, evaluated only (cross-domain)."),
    target: str = typer.Option("aggregated", help="aggregated (8 classes) or fine (14 classes)."),
    feature_set: str = typer.Option("fxlens-406", help="fxlens-406 (AutoFX 163 + effect features) or autofx-163."),
    multilabel: bool = typer.Option(False, "--multilabel",
                                    help="One sigmoid per effect class (of --target), trained with chains."),
    model: str = typer.Option("mlp", "--model", help="mlp (features) or resnet (features + log-mel ResNet)."),
    epochs: Optional[int] = typer.Option(None, help="Training epochs (default: 200 for mlp, 15 for resnet)."),
    lr: float = typer.Option(2e-3, help="Peak learning rate (AdamW)."),
    init: Optional[Path] = typer.Option(None, help="Start from this recognizer checkpoint (fine-tuning); "
                                                   "it must match --target, --multilabel, --model and the features."),
    workers: int = typer.Option(1, "--workers", help=FEATURE_WORKERS_HELP),
    seed: int = typer.Option(0, help="Seed."),
) -> None:
    """Effect recognition: an MLP on features, or features + a log-mel ResNet, with SVM and k-NN baselines in the
    same run."""
    from rich.progress import Progress
    from rich.table import Table

    from fxlens.train.recognizer import rate_cell, train_recognizer

    _check_workers(workers)
    with Progress(console=console) as progress:
        update = _named_progress(progress)
        metrics = train_recognizer(fxset, out, target=target, cross_domain=cross_domain, epochs=epochs, seed=seed,
                                   progress=update, feature_set=feature_set, multilabel=multilabel, model_kind=model,
                                   lr=lr, init=init, workers=workers)
    if multilabel:
        fine = target == "fine"
        table = Table(title=f"multi-label recognition ({len(metrics['classes'])} {target} effect classes; "
                            "dry = none)")
        cols = ["split", "clips", "exact match", "exact match (chains)", "macro F1"]
        for col in cols + (["exact match (agg.)", "exact match (chains, agg.)"] if fine else []):
            table.add_column(col, justify="right" if col != "split" else "left")
        for split, m in metrics["multilabel"].items():
            row = [split, str(metrics["counts"][split]), rate_cell(m["exact_match"]),
                   rate_cell(m["exact_match_chains"]), rate_cell(m["macro_f1"])]
            if fine:
                row += [rate_cell(m["aggregated"]["exact_match"]), rate_cell(m["aggregated"]["exact_match_chains"])]
            table.add_row(*row)
    else:
        table = Table(title=f"recognition accuracy ({target} classes: {len(metrics['classes'])})")
        keys = [model, "svm", "knn"]
        keys += [f"{k}_aggregated" for k in keys] if target == "fine" else []
        for col in ["split", "clips"] + [k.replace("knn", "k-NN").replace("mlp", "MLP").replace("svm", "SVM")
                                         .replace("resnet", "ResNet").replace("_aggregated", " (agg.)") for k in keys]:
            table.add_column(col, justify="right" if col != "split" else "left")
        for split, row in metrics["accuracy"].items():
            table.add_row(split, str(metrics["counts"][split]), *(f"{row[k]:.3f}" for k in keys))
    console.print(table)
    console.print(f"checkpoint, config, model card and metrics.json -> [bold]{out}[/]")


@train_app.command("stack")
def train_stack_command(
    fxset: Path = typer.Argument(..., help="An `fxlens data fxset` folder (train/val/test/ood)."),
    recognizer: Path = typer.Option(..., "--recognizer", help="The multi-label recognizer checkpoint to stack on "
                                    "(a stacked one: its base)."),
    out: Path = typer.Option(..., "--out", "-o", help="Checkpoint folder to write."),
    cross_domain: Optional[Path] = typer.Option(None, help="A pedalboard fxset, evaluated only (cross-domain)."),
    max_iter: int = typer.Option(300, "--max-iter", help="Boosting iterations per class at most."),
    workers: int = typer.Option(1, "--workers", help=FEATURE_WORKERS_HELP),
    seed: int = typer.Option(0, help="Seed (the trees' held-out split)."),
) -> None:
    """Boosted trees on a multi-label recognizer's logits and the clip features, fitted on the train split; the
    result is a recognizer checkpoint (`fxlens analyze --recognizer`)."""
    from rich.progress import Progress
    from rich.table import Table

    from fxlens.train.recognizer import rate_cell
    from fxlens.train.stack import train_stack

    _check_workers(workers)
    with Progress(console=console) as progress:
        metrics = train_stack(fxset, recognizer, out, cross_domain=cross_domain, max_iter=max_iter, seed=seed,
                              progress=_named_progress(progress), workers=workers)
    table = Table(title="stacked recognizer: exact match of the effect groups, as `analyze` forms them "
                        "(its base alone in brackets)")
    for col in ("split", "clips", "all clips", "chains", "single effects"):
        table.add_column(col, justify="right" if col != "split" else "left")
    for split, m in metrics["multilabel"].items():
        a, b = m["aggregated"], metrics["multilabel_base"][split]["aggregated"]
        table.add_row(split, str(metrics["counts"][split]),
                      *(f"{rate_cell(a[k])} ({rate_cell(b[k])})" for k in
                        ("exact_match", "exact_match_chains", "exact_match_single")))
    console.print(table)
    console.print(f"checkpoint, config, model card and metrics.json -> [bold]{out}[/]")


@train_app.command("estimator")
def train_estimator_command(
    fxset: Path = typer.Argument(..., help="An `fxlens data fxset` folder (train/val/test/ood)."),
    out: Path = typer.Option(..., "--out", "-o", help="Checkpoint folder to write."),
    model: Optional[str] = typer.Option(None, "--model", help="mlp (features + class one-hot; default), resnet "
                                        "(log-mel ResNet with FiLM class conditioning) or resnet-features (both: "
                                        "AutoFX-feat)."),
    feature_set: str = typer.Option("fxlens-406", help="Features of mlp and resnet-features: fxlens-406 (AutoFX "
                                    "163 + effect features) or autofx-163."),
    epochs: int = typer.Option(100, help="Supervised training epochs (0 allowed with --init)."),
    train_clips: Optional[int] = typer.Option(None, "--train-clips", help="Use at most this many train clips per "
                                              "class (default: all)."),
    hop: int = typer.Option(1024, "--hop", help="ResNet: STFT hop of the log-mel input (FFT 2048)."),
    n_mels: int = typer.Option(64, "--n-mels", help="ResNet: mel bands of the log-mel input (50 Hz - 18 kHz)."),
    init: Optional[Path] = typer.Option(None, "--init", help="Start from this estimator checkpoint."),
    finetune_steps: int = typer.Option(0, "--finetune-steps", help="Spectral fine-tuning steps: render estimates "
                                       "through fxlens's effects, MRSTFT loss against the wet clip (0: none)."),
    finetune_lr: float = typer.Option(1e-4, "--finetune-lr", help="Fine-tuning learning rate."),
    finetune_batch: int = typer.Option(8, "--finetune-batch", help="Clips per fine-tuning step."),
    param_weight: float = typer.Option(0.1, "--param-weight", help="Weight of the parameter L1 loss kept while "
                                       "fine-tuning."),
    spectral_clips: Optional[int] = typer.Option(None, "--spectral-clips", help="Clips per class of test whose "
                                                 "re-rendered estimates are scored by MRSTFT (default: 10 when "
                                                 "fine-tuning, else 0)."),
    stems: Optional[Path] = typer.Option(None, "--stems", help="The dry stem dataset of the fxset (default: where "
                                         "its labels say)."),
    workers: int = typer.Option(1, "--workers", help=FEATURE_WORKERS_HELP),
    seed: int = typer.Option(0, help="Seed."),
) -> None:
    """Effect settings: MLP on features or ResNet-FiLM on log-mels, class-conditioned -> normalized controls (loss
    on the active effect only); optional spectral fine-tuning through fxlens's differentiable effects."""
    from rich.progress import Progress
    from rich.table import Table

    from fxlens.train.estimator import results_table, spectral_table, train_estimator

    _check_workers(workers)
    with Progress(console=console) as progress:
        metrics = train_estimator(fxset, out, feature_set=feature_set, epochs=epochs, seed=seed,
                                  progress=_named_progress(progress), model=model, max_train_per_class=train_clips,
                                  hop=hop, n_mels=n_mels, init=init, finetune_steps=finetune_steps,
                                  finetune_lr=finetune_lr, finetune_batch=finetune_batch, param_weight=param_weight,
                                  spectral_clips=spectral_clips, stems=stems, log=progress.console.print,
                                  workers=workers)
    for split in ("test", "ood"):
        rows = results_table(metrics, split)
        if not rows:
            continue
        table = Table(title=f"parameter MAE on {split} (normalized controls; lower is better)")
        for col in ("class", "effect", "clips", "model", "random", "class mean"):
            table.add_column(col, justify="left" if col in ("class", "effect") else "right")
        for c, e, n, mo, ra, cm in rows:
            table.add_row(c, e, str(n), f"{mo:.3f}", f"{ra:.3f}", "-" if cm is None else f"{cm:.3f}")
        console.print(table)
    spectral = (metrics.get("finetune") or {}).get("spectral") or metrics.get("spectral") or {}
    for split, scores in spectral.items():
        console.print(f"MRSTFT of re-rendered estimates, {split} (lower is better):")
        console.print("\n".join(spectral_table(scores)), highlight=False)
    console.print(f"checkpoint, config, model card and metrics.json -> [bold]{out}[/]")


@app.command()
def analyze(
    file: Path = typer.Argument(..., help="An audio file (wav, flac, ogg, mp3, opus; any rate, 1-8 channels)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the full result as JSON here."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write a figure (spectrogram, probabilities, EQ and "
                                                              "compressor curves) here (PNG/SVG/PDF)."),
    preset: Optional[Path] = typer.Option(None, "--preset", help="Write the estimated chain as a preset JSON "
                                                                  "(for `fxlens fx apply --preset`)."),
    recognizer: Optional[Path] = typer.Option(None, help="A recognizer checkpoint (default: the shipped one)."),
    estimator: Optional[Path] = typer.Option(None, help="An estimator checkpoint (default: the shipped one)."),
    threshold: float = typer.Option(0.5, help="Probability to report an effect (multi-label recognizers)."),
) -> None:
    """Which effects are on a recording, with probabilities, and their estimated settings in physical units."""
    import json

    from rich.table import Table

    from fxlens.atomic import write_text_atomic
    from fxlens.fx.preset import write_preset
    from fxlens.report import _fmt
    from fxlens.tasks.analyze import analyze_file, heard_in_part, plot_analysis

    if not 0.0 < threshold < 1.0:
        raise FxlensError("--threshold must be between 0 and 1")
    for p in (json_out, plot, preset):
        if p is not None and p.is_dir():
            raise FxlensError(f"output path is a folder: {p}")
    if plot is not None and plot.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise FxlensError(f"--plot must end in .png, .svg or .pdf: {plot}")
    with console.status("analyzing..."):
        result, x = analyze_file(file, recognizer=recognizer, estimator=estimator, threshold=threshold)
    table = Table(title=f"{file.name}: {result.duration_s:.2f} s, {result.windows} window(s) of 1.5 s")
    for col in ("effect", "probability", "class", "setting", "value", "±", "unit"):
        table.add_column(col, justify="right" if col in ("probability", "value", "±") else "left")
    notes = []
    if not result.effects:
        dry_p = result.probabilities["dry"]
        others = sorted(((v, k) for k, v in result.probabilities.items() if k != "dry"), reverse=True)
        if not others or dry_p >= threshold or dry_p >= others[0][0]:
            table.add_row("(none: dry)", f"{dry_p:.2f}", "dry", "", "", "", "")
        else:  # no effect is sure enough, but neither is "dry": say so rather than call the recording dry
            table.add_row(f"(none reaches {threshold:g})", f"{dry_p:.2f}", "dry?", "", "", "", "")
            lower = math.floor(others[0][0] * 10) / 10
            notes.append(f"no effect reaches {threshold:g}, yet dry is only {dry_p:.2f}: most likely "
                         + ", ".join(f"{k} {v:.2f}" for v, k in others[:2])
                         + (f" (--threshold {lower:g} reports their settings)" if lower > 0 else ""))
    for k, d in enumerate(result.effects):
        for j, (name, value) in enumerate(d.settings.items()):
            err = d.typical_error.get(name)
            err_text = "" if err is None else _fmt(float(f"{err:.2g}"))
            table.add_row(d.effect if j == 0 else "", f"{d.probability:.2f}" if j == 0 else "",
                          d.fine_class if j == 0 else "", name + (" *" if name in d.measured else ""), _fmt(value),
                          err_text + (" ~" if name in d.near_class_mean else ""), d.units[name])
        if k < len(result.effects) - 1:
            table.add_section()
    part = heard_in_part(result, threshold)
    if part:
        notes.append("a hint, less sure than the table — heard in part of the recording (per window: --plot, "
                     "--json): " + ", ".join(
            f"{h['aggregated_class']} in {h['windows']} of {h['of']} windows, {h['run']} in a row at "
            f"{h['from_s']:.0f}-{h['to_s']:.0f} s" for h in part))
    if any(d.measured for d in result.effects):
        notes.append("* read from the audio itself (a period: envelope, pitch or cepstrum); the rest is estimated")
    if any(d.near_class_mean for d in result.effects):
        notes.append("~ estimated no better than the class's average setting on validation clips")
    if any(d.typical_error for d in result.effects):
        notes.append("±: the estimator's typical error, its mean on validation clips of that class")
    table.caption = "\n".join(notes) or None
    console.print(table)
    console.print("class probabilities: " + ", ".join(f"{k} {v:.2f}" for k, v in
                                                      sorted(result.probabilities.items(), key=lambda kv: -kv[1])))
    st = result.stereo
    if st:
        lo, hi = min(st["bands"], key=lambda b: b["side_mid_db"]), max(st["bands"], key=lambda b: b["side_mid_db"])
        spread = (" (mono)" if st["side_mid_db"] <= -59.9 else
                  f", from {lo['side_mid_db']:.1f} dB ({_band(lo)}) to {hi['side_mid_db']:.1f} dB ({_band(hi)})")
        console.print(f"stereo image (measured): L/R correlation {st['lr_correlation']:.2f}, side/mid "
                      f"{st['side_mid_db']:.1f} dB over all{spread}"
                      + (" — negative: the channels partly cancel in mono" if st["lr_correlation"] < 0 else ""))
    # the figure first: it is the output most likely to fail (an unknown format, a backend problem), and a failure
    # must leave no other output behind
    if plot is not None:
        plot_analysis(result, x, plot)
        console.print(f"wrote [bold]{plot}[/]")
    if json_out is not None:
        write_text_atomic(json_out, json.dumps(result.to_dict(), indent=2) + "\n")
        console.print(f"wrote [bold]{json_out}[/]")
    if preset is not None:
        write_preset(preset, result.preset)
        console.print(f"wrote [bold]{preset}[/] (apply it: fxlens fx apply YOUR.wav OUT.wav --preset {preset})")


def _band(b: dict) -> str:
    """A frequency band for a line of text: "108-512 Hz", "2.7-4.1 kHz"."""
    lo, hi = b["lo_hz"], b["hi_hz"]
    return f"{lo:.0f}-{hi:.0f} Hz" if hi < 1000 else f"{lo / 1000:.2g}-{hi / 1000:.2g} kHz"


@bench_app.command("recognition")
def bench_recognition_command(
    fxset: Path = typer.Argument(..., help="An fxlens fxset folder (its test and ood splits, or --splits)."),
    cross_domain: Optional[Path] = typer.Option(None, help="A pedalboard fxset (every split evaluated)."),
    recognizer: Optional[Path] = typer.Option(None, help="Recognizer checkpoint (default: the shipped one)."),
    estimator: Optional[Path] = typer.Option(None, help="Estimator checkpoint (default: the shipped one)."),
    out: Path = typer.Option(Path("bench-recognition.json"), "--out", help="JSON results."),
    markdown: Optional[Path] = typer.Option(None, "--markdown", help="Also write the tables as Markdown here."),
    mrstft_clips: int = typer.Option(10, "--mrstft-clips", help="Clips per class of test/ood whose estimates are "
                                     "re-rendered and scored by MRSTFT against dry/random (0: skip)."),
    stems: Optional[Path] = typer.Option(None, "--stems", help="The dry stem dataset of the fxset (default: where "
                                         "its labels say)."),
    real: bool = typer.Option(True, "--real/--no-real", help="Also read the real lead-guitar stems of the Frets on "
                              "Fire songs (distorted; skipped when not installed)."),
    splits: Optional[str] = typer.Option(None, "--splits", help="Comma list of splits to read (default: test,ood "
                                         "in-domain and every cross-domain split; e.g. val to choose a model "
                                         "without reading test)."),
    workers: int = typer.Option(1, "--workers", help=FEATURE_WORKERS_HELP),
    dry_stems: int = typer.Option(60, "--dry-stems", help="Whole dry stems of the (first) split's songs read as "
                                  "`fxlens analyze` reads a recording: its false alarms (0: skip)."),
) -> None:
    """Recognition accuracy, per-class precision/recall, confusion matrices (in-domain, ood, cross-domain),
    per-parameter MAE beside random parameters, the MRSTFT of re-rendered estimates beside dry and random, and what
    the recognizer hears on real distorted guitar stems; beside them AutoFX's own protocol (its six aggregated
    classes, its Table C.2's controls on its scale)."""
    from rich.progress import Progress

    from fxlens.atomic import write_text_atomic
    from fxlens.bench.recognition import markdown_report, run_recognition_benchmark

    _check_workers(workers)
    if dry_stems < 0:
        raise FxlensError(f"--dry-stems must be >= 0, got {dry_stems}")
    with Progress(console=console) as progress:
        results = run_recognition_benchmark(fxset, cross_domain=cross_domain, recognizer=recognizer,
                                            estimator=estimator, progress=_named_progress(progress),
                                            mrstft_clips=mrstft_clips, stems=stems, real=real,
                                            splits=_split_names(splits, "--splits"), workers=workers,
                                            dry_stems=dry_stems)
    text = markdown_report(results)
    console.print(text)
    write_text_atomic(out, __import__("json").dumps(results, indent=2) + "\n")
    console.print(f"wrote [bold]{out}[/]")
    if markdown is not None:
        write_text_atomic(markdown, text)
        console.print(f"wrote [bold]{markdown}[/]")


@bench_app.command("retrieval")
def bench_retrieval_command(
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="A rendered dataset (default: <data-dir>/fxlens-dry)."),
    candidates: int = typer.Option(500, help="Candidates per query (the paper's protocol: 500)."),
    queries: int = typer.Option(100, help="Queries per group (instrument family, mixture, real collection)."),
    seconds: float = typer.Option(2.0, help="Clip length."),
    seed: int = typer.Option(0, help="Decides the evaluation set (cached)."),
    cache_dir: Optional[Path] = typer.Option(None, help="Where to cache evaluation sets (default: <data-dir>/bench-cache)."),
    group: Optional[list[str]] = typer.Option(None, "--group", help="Only these groups (repeatable; e.g. bass, "
                                              "mixture, inst/bass, real/wesnoth, pedalboard/inst/bass)."),
    no_real: bool = typer.Option(False, "--no-real", help="Leave out the real recordings."),
    no_instrument_wise: bool = typer.Option(False, "--no-instrument-wise",
                                            help="Leave out the instrument-wise groups (inst/<instrument>, Table 3)."),
    model: Optional[list[Path]] = typer.Option(None, "--model", help="An encoder checkpoint folder to score beside "
                                               "the baselines (repeatable; default: the shipped encoder-small when "
                                               "this install has it)."),
    baselines: Optional[str] = typer.Option(None, "--baselines", help=BASELINES_HELP),
    effects: Optional[str] = typer.Option(None, "--effects", help="Comma list of the effects the chains draw from "
                                          "(default: the encoder's training pool)."),
    max_effects: int = typer.Option(8, "--max-effects", help="Largest number of effects in a chain (smallest: 1)."),
    plots: Optional[Path] = typer.Option(None, "--plots", help="Write R@K-vs-number-of-effects and t-SNE plots "
                                         "(PNG) to this folder."),
    markdown: Optional[Path] = typer.Option(None, "--markdown", help="Also write the tables as Markdown here."),
    split: str = typer.Option("test", help="Dataset split the content comes from: test, or ood (held-out soundfont "
                              "and instruments)."),
    implementation: str = typer.Option("fxlens", "--implementation", help="Who renders the chains: fxlens (its own "
                                       "effects), pedalboard (the twin pedalboard/<group> of each group: "
                                       "pedalboard/<instrument>, pedalboard/mixture, pedalboard/inst/<instrument>, "
                                       "pedalboard/real/<name>; the same content and chains, an implementation "
                                       "never trained on; needs pedalboard installed) or both."),
    no_loudness_norm: bool = typer.Option(False, "--no-loudness-norm", help="Leave the clips at the level their "
                                          "chains give (default: every clip at -18 LUFS after its chain, as the "
                                          "encoder's training mixtures)."),
    out: Path = typer.Option(Path("bench-retrieval.json"), "--out", help="JSON results."),
) -> None:
    """Effect retrieval (Fx-Encoder++ protocol): R@1/5/10, MRR@10 with bootstrap CIs, mixture-level (Table 2) and
    instrument-wise (Table 3: oracle, mixture, audio and text query), learned encoders beside the baselines."""
    from rich.progress import Progress

    from fxlens.atomic import write_text_atomic
    from fxlens.bench.baselines import default_baselines, encoder_embedders
    from fxlens.bench.retrieval import EVAL_LUFS, IMPLEMENTATIONS, run_retrieval_benchmark
    from fxlens.data.pairs import PAIR_POOL

    root = data_dir if data_dir is not None else _data_dir(None) / "fxlens-dry"
    if candidates < 2 or queries < 1 or seconds <= 0 or max_effects < 1:
        raise FxlensError("--candidates must be >= 2, --queries >= 1, --seconds > 0 and --max-effects >= 1")
    if split == "train":
        raise FxlensError("--split train is what the models learn from: benchmark on test, ood (or val)")
    if implementation not in IMPLEMENTATIONS:
        raise FxlensError(f"--implementation must be {', '.join(IMPLEMENTATIONS[:-1])} or {IMPLEMENTATIONS[-1]}, "
                          f"got {implementation!r}")
    if implementation != "fxlens":
        from fxlens.fx.pedalboard_map import require_pedalboard

        require_pedalboard()  # a missing optional extra fails before any work
    pool = _split_names(effects) or list(PAIR_POOL)
    embedders = (default_baselines(seed=seed, names=_baseline_names(baselines))
                 + encoder_embedders(model))  # bad checkpoints fail before any work
    if not embedders:
        raise FxlensError("nothing to score: --baselines none and no encoder (give --model)")
    with Progress(console=console) as progress:
        update = _named_progress(progress)
        results = run_retrieval_benchmark(root, n_candidates=candidates, n_queries=queries, seconds=seconds, seed=seed,
                                          embedders=embedders, out_json=out,
                                          cache_dir=cache_dir or root.parent / "bench-cache", groups=group,
                                          include_real=not no_real, instrument_wise=not no_instrument_wise,
                                          effects=pool, max_effects=max_effects, plots_dir=plots, progress=update,
                                          split=split, implementation=implementation,
                                          output_lufs=None if no_loudness_norm else EVAL_LUFS)
    console.print(results["report"], soft_wrap=True, highlight=False)  # table rows unbroken, pasteable
    if markdown is not None:
        write_text_atomic(markdown, results["report"])
        console.print(f"wrote [bold]{markdown}[/]")
    for path in results.get("plots", []):
        console.print(f"wrote [bold]{path}[/]")
    console.print(f"wrote [bold]{out}[/]")


@bench_app.command("match")
def bench_match_command(
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="A rendered dataset (default: <data-dir>/fxlens-dry)."),
    triplets: int = typer.Option(100, "--triplets", help="Triplets per instrument (the paper: 100)."),
    instruments: Optional[str] = typer.Option(None, "--instruments", help="Comma list (default: every instrument "
                                              "with two or more songs in the test split)."),
    seconds: float = typer.Option(2.0, help="Clip length."),
    iterations: int = typer.Option(100, help="Optimizer iterations (CMA-ES generations / gradient steps)."),
    method: str = typer.Option("both", "--method", help="grad, cmaes or both (CMA-ES for every embedder, gradients "
                               "for the encoder)."),
    gradient_baselines: bool = typer.Option(False, "--gradient-baselines", help="Gradient rows for the "
                                            "differentiable baselines too (log-mel stats, band statistics, random "
                                            "CNN; not the MFCC features)."),
    model: Optional[list[Path]] = typer.Option(None, "--model", help="An encoder checkpoint folder (repeatable; "
                                               "default: the shipped encoder-small when this install has it)."),
    baselines: Optional[str] = typer.Option(None, "--baselines", help=BASELINES_HELP),
    effects: Optional[str] = typer.Option(None, "--effects", help="Comma list: the chain to match, in order "
                                          "(default: the paper's EQ, multiband compressor, imager, gain, distortion, "
                                          "delay, limiter)."),
    popsize: int = typer.Option(32, "--popsize", help="CMA-ES population (ST-ITO: 32)."),
    split: str = typer.Option("test", "--split", help="Split the triplets come from: test (the benchmark), or val "
                              "/ ood (choose settings on val, never on test)."),
    reference: str = typer.Option("stem", "--reference", help="stem: the reference is the processed stem alone (the "
                                  "paper); mix: that stem inside a mixture of its song, and each encoder also "
                                  "matches through the extractor with the instrument's text query."),
    device: Optional[str] = typer.Option(None, "--device", help="Where chains render and the encoder runs "
                                         "(cpu, cuda; default cpu)."),
    seed: int = typer.Option(0, help="Decides the triplets and the optimizers' draws."),
    out: Path = typer.Option(Path("bench-match.json"), "--out", help="JSON results. Each triplet's results are "
                             "journaled as it is done in <out stem>.journal/: the same command run again continues "
                             "where it stopped (a larger --triplets adds triplets, another --model adds rows)."),
    restart: bool = typer.Option(False, "--restart", help="Discard the journaled triplets of --out and start over."),
    markdown: Optional[Path] = typer.Option(None, "--markdown", help="Also write the tables as Markdown here."),
) -> None:
    """Effect parameter matching (Fx-Encoder++ §4.2, ST-ITO): estimate a chain's settings from a reference by
    inference-time optimization (CMA-ES, gradients), render the input, and report the multi-resolution STFT distance
    to the target per instrument, beside the unprocessed input, random settings and the oracle. Resumable: see
    --out."""
    from rich.progress import Progress

    from fxlens.atomic import write_text_atomic
    from fxlens.bench.baselines import default_baselines, encoder_embedders
    from fxlens.bench.matching import DEFAULT_CHAIN, METHODS, REFERENCES, run_matching_benchmark

    root = data_dir if data_dir is not None else _data_dir(None) / "fxlens-dry"
    if method not in METHODS:
        raise FxlensError(f"--method must be one of {', '.join(METHODS)}, got '{method}'")
    if reference not in REFERENCES:
        raise FxlensError(f"--reference must be one of {', '.join(REFERENCES)}, got '{reference}'")
    if split not in ("test", "val", "ood"):
        raise FxlensError(f"--split must be test, val or ood, got '{split}'")
    if triplets < 1 or iterations < 1 or popsize < 2 or not seconds >= 0.25:
        raise FxlensError("--triplets and --iterations must be >= 1, --popsize >= 2 and --seconds >= 0.25")
    if not root.is_dir():
        raise FxlensError(f"no dataset folder '{root}' (render one with `fxlens data render`, or give --data-dir)")
    if device is not None:
        import torch

        try:
            dev = torch.device(device)
        except RuntimeError:
            raise FxlensError(f"--device must be a torch device such as cpu or cuda, got '{device}'") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise FxlensError("--device cuda: no CUDA device is available here")
    embedders = (default_baselines(seed=seed, device=device, names=_baseline_names(baselines))
                 + encoder_embedders(model, device=device or "cpu"))
    if not embedders:
        raise FxlensError("nothing to score: --baselines none and no encoder (give --model)")
    with Progress(console=console) as progress:
        results = run_matching_benchmark(root, instruments=_split_names(instruments, "--instruments"), n_triplets=triplets,
                                         seconds=seconds, iterations=iterations, method=method, embedders=embedders,
                                         effects=_split_names(effects) or list(DEFAULT_CHAIN), popsize=popsize,
                                         seed=seed, device=device, out_json=out, restart=restart,
                                         gradient_baselines=gradient_baselines, reference=reference, split=split,
                                         progress=_named_progress(progress))
    console.print(results["table"], soft_wrap=True, highlight=False)  # table rows unbroken, pasteable as Markdown
    if markdown is not None:
        write_text_atomic(markdown, results["table"])
        console.print(f"wrote [bold]{markdown}[/]")
    console.print(f"wrote [bold]{out}[/]")


def _warn_if_cpu_busy() -> None:
    """The timing commands' one warning line when other work already keeps the CPU busy."""
    from fxlens.bench.speed import busy_cpu_warning

    if (busy := busy_cpu_warning()) is not None:
        console.print(f"[yellow]{busy}[/]", highlight=False)


@bench_app.command("fx")
def bench_fx_command(
    seconds: float = typer.Option(10.0, help="Length of the test audio (stereo, 44.1 kHz)."),
    batch: str = typer.Option("1,16", help="Comma-separated batch sizes."),
    repeats: int = typer.Option(3, help="Timed runs per figure (median reported)."),
    effects: Optional[str] = typer.Option(None, help="Comma-separated effects (default: all, plus the 8-effect chain)."),
    no_backward: bool = typer.Option(False, "--no-backward", help="Skip forward+backward timings."),
    json_out: Path = typer.Option(Path("bench-fx.json"), "--json", help="Where to write the JSON results."),
    markdown: Optional[Path] = typer.Option(None, "--markdown", help="Also write the table as Markdown here."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Also draw the speeds as a bar chart (PNG/SVG/PDF)."),
) -> None:
    """Speed of every effect and of an 8-effect chain (x real time), beside pedalboard and dasp-pytorch."""
    from rich.table import Table

    from fxlens.bench.speed import bench_fx, format_xrt, machine_description, markdown_table, verdicts, write_json

    try:
        batches = tuple(int(b) for b in batch.split(","))
    except ValueError:
        raise FxlensError(f"--batch must be comma-separated integers, got {batch!r}") from None
    if seconds <= 0 or repeats < 1 or any(b < 1 for b in batches):
        raise FxlensError("--seconds must be > 0, --repeats >= 1 and batch sizes >= 1")
    names = _split_names(effects)
    if names:
        from fxlens.fx import effect_class

        for n in names:
            effect_class(n)
    _warn_if_cpu_busy()
    table = Table(title=f"fxlens bench fx: x real time, {seconds:g} s stereo 44.1 kHz, {machine_description()['threads']} threads")
    table.add_column("effect", style="bold cyan")
    for b in batches:
        table.add_column(f"fwd b{b}", justify="right")
    if not no_backward:
        for b in batches:
            table.add_column(f"fwd+bwd b{b}", justify="right")
    table.add_column("pedalboard b1", justify="right")
    table.add_column("dasp fwd / fwd+bwd b1", justify="right")
    table.add_column("targets")

    fmt = format_xrt
    rows = []
    with console.status("timing effects...") as status:
        def on_row(row):
            status.update(f"timed {row.name}")
            console.print(f"  {row.name}: fwd b1 {fmt(row.forward.get(batches[0]))}", highlight=False)
            rows.append(row)

        bench_fx(seconds, batches, repeats, names, backward=not no_backward, on_row=on_row)
    for r in rows:
        cells = [fmt(r.forward.get(b)) for b in batches]
        if not no_backward:
            cells += [fmt(r.forward_backward.get(b)) for b in batches]
        dasp = "-" if r.dasp is None else f"{fmt(r.dasp)} / {fmt(r.dasp_forward_backward)}"
        table.add_row(r.name, *cells, fmt(r.pedalboard), dasp, "; ".join(verdicts(r)))
    console.print(table)
    path = write_json(json_out, rows, {"seconds": seconds, "batches": list(batches), "repeats": repeats})
    console.print(f"wrote {path}")
    if markdown is not None:
        from fxlens.atomic import write_text_atomic

        console.print(f"wrote {write_text_atomic(markdown, markdown_table(rows))}")
    if plot is not None:
        from fxlens.bench.speed import plot_speed

        console.print(f"wrote {plot_speed(rows, plot)}")


# --- the effects encoder (issue 4) --------------------------------------------------------------------------------


_POSITIVES_HELP = ("Where a positive pair's second mixture takes its music from: same-song (the paper: another "
                   "segment of the same song) or other-song (another song under the same chains, as the retrieval "
                   "benchmark's targets).")


@data_app.command("pairs")
def data_pairs(
    out: Path = typer.Argument(..., help="Folder for the saved batches (resumable)."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="A rendered dataset (default: <data-dir>/fxlens-dry)."),
    batches: int = typer.Option(400, help="How many batches (numbered 0..N-1, as training asks for them)."),
    batch_size: int = typer.Option(16, help="Mixture pairs per batch."),
    seconds: float = typer.Option(2.0, help="Segment length."),
    max_instruments: int = typer.Option(4, help="Most stems per mixture (1..N, uniform)."),
    hard_negatives: int = typer.Option(2, help="Hard negatives per batch (same music, other effects)."),
    positives: str = typer.Option("same-song", help=_POSITIVES_HELP),
    seed: int = typer.Option(0, help="Decides every batch (the training run must use the same)."),
    workers: int = typer.Option(2, help="Parallel processes."),
) -> None:
    """Precompute contrastive training batches (log-mels) for CPU training: the batches the trainer would build."""
    from rich.progress import Progress

    from fxlens.train.encoder import precompute_batches

    root = data_dir if data_dir is not None else _data_dir(None) / "fxlens-dry"
    if batches < 1 or workers < 1:
        raise FxlensError("--batches and --workers must be >= 1")
    with Progress(console=console) as progress:
        task = progress.add_task("batches", total=batches)
        n = precompute_batches(root, out, batches, batch_size=batch_size, seconds=seconds,
                               max_instruments=max_instruments, hard_negatives=hard_negatives, seed=seed,
                               workers=workers, positives=positives, progress=_progress_callback(progress, task))
    console.print(f"{n} batches in [bold]{out}[/]")


def _dropout_range(text: str) -> tuple[float, float]:
    """Parse --query-dropout: "0.75,0.95" -> (0.75, 0.95); one number is a fixed rate."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) not in (1, 2):
        raise FxlensError(f"--query-dropout: '{text}' is not LOW,HIGH or one number")
    return values[0], values[-1]


@train_app.command("encoder")
def train_encoder_command(
    out: Path = typer.Option(Path("runs/encoder-small"), "--out", help="Run folder: state.pt (resume), model/, history.json."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="A rendered dataset (default: <data-dir>/fxlens-dry)."),
    preset: str = typer.Option("small", help="small (CNN, CPU, ~1.4 M parameters), stats2 / stats (an MLP on "
                               "per-band statistics, version 2 / 1, ~1.0 / 0.65 M) or base (the paper's CNN14, GPU)."),
    steps: int = typer.Option(2000, help="Optimizer steps."),
    batch_size: int = typer.Option(16, help="Mixture pairs per batch."),
    lr: float = typer.Option(1e-3, help="Peak learning rate (AdamW, warm-up + cosine)."),
    lambda_inst: float = typer.Option(0.2, help="Final weight of the instrument loss (0: mixture objective only)."),
    no_hard_negatives: bool = typer.Option(False, "--no-hard-negatives", help="Leave the hard negatives out of the loss."),
    stem_weight: float = typer.Option(0.0, help="Weight of an NT-Xent on the stems of 2+ instrument mixtures as "
                                      "pairs of their own (0: the paper's objective)."),
    inst_target: str = typer.Option("mixture", "--inst-target", help="What an extracted instrument embedding is "
                                    "pulled towards: mixture (the paper: the other mixture's extraction) or stem (the "
                                    "queried stem alone in the other mixture)."),
    inst_negatives: bool = typer.Option(False, "--inst-negatives", help="With --inst-target stem: the other stems "
                                        "of the pairs are negatives of each extraction too (only the query tells "
                                        "them apart)."),
    query_dropout: str = typer.Option("0.75,0.95", "--query-dropout", help="Dropout on the query vector while "
                                      "training, drawn per step from LOW,HIGH (the paper: 0.75,0.95; 0: none)."),
    freeze_query_encoder: bool = typer.Option(False, "--freeze-query-encoder", help="Keep the audio query encoder "
                                              "of --init as it is (no query loss; a step costs far less on a CPU). "
                                              "Without --init only with --lambda-inst 0 (mixture objective only)."),
    freeze_encoder: bool = typer.Option(False, "--freeze-encoder", help="Keep the effects encoder of --init as it "
                                        "is and train the extractor alone, on the instrument loss (needs "
                                        "--freeze-query-encoder)."),
    extractor_input: str = typer.Option("embedding", "--extractor-input", help="What the extractor reads of a "
                                        "mixture: embedding (the paper), hidden (the encoder's layer before its "
                                        "projection), statistics (a band-statistics encoder's normalized input), "
                                        "film (the query scales and shifts those statistics, the encoder's "
                                        "layers embed them) or mask (the query attenuates the log-mel in time "
                                        "and frequency, the encoder embeds what is left)."),
    recon_weight: float = typer.Option(0.0, "--recon-weight", help="With --extractor-input mask: weight of the L1 "
                                       "distance of the masked log-mel to the queried stem's log-mel."),
    objective: str = typer.Option("contrastive", help="contrastive (Fx-Encoder++), or classify (the AFx-Rep-style "
                                  "baseline: which effects are on which instrument)."),
    positives: str = typer.Option("same-song", help=_POSITIVES_HELP),
    precomputed: Optional[Path] = typer.Option(None, help="Train on batches saved by `fxlens data pairs` (CPU)."),
    tracks: Optional[Path] = typer.Option(None, "--tracks", help="Also train on full-mix batches of real tracks "
                                          "saved by `fxlens data pairs` from `fxlens data music` (mixture objective "
                                          "only), interleaved with --precomputed."),
    tracks_share: float = typer.Option(0.25, "--tracks-share", help="Share of the steps that take a --tracks batch."),
    workers: int = typer.Option(1, help="DataLoader processes building batches on the fly."),
    threads: Optional[int] = typer.Option(None, help="Torch CPU threads."),
    accelerator: str = typer.Option("auto", help="cpu, gpu or auto (Lightning Fabric)."),
    devices: str = typer.Option("1", help="Devices: a count, or 'auto' (several GPUs train with DDP)."),
    precision: str = typer.Option("32-true", help="Fabric precision, e.g. bf16-mixed on a GPU."),
    seed: int = typer.Option(0, help="Decides the batches and the initialization."),
    val_every: int = typer.Option(250, help="Validate and checkpoint every N steps."),
    fresh: bool = typer.Option(False, "--fresh", help="Start over even if the run folder has a state to resume."),
    init: Optional[Path] = typer.Option(None, "--init", help="Start from the weights of this encoder checkpoint "
                                        "folder (fine-tuning; same preset)."),
) -> None:
    """Train the Fx-Encoder++ model: mixture + instrument NT-Xent, audio query alignment, probability scheduling."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from fxlens.train import command_line
    from fxlens.train.encoder import EncoderTrainConfig, train_encoder

    root = data_dir if data_dir is not None else _data_dir(None) / "fxlens-dry"
    cfg = EncoderTrainConfig(data_root=str(root), out_dir=str(out), preset=preset, steps=steps, batch_size=batch_size,
                             lr=lr, lambda_inst=lambda_inst, use_hard_negatives=not no_hard_negatives, objective=objective,
                             positives=positives, stem_weight=stem_weight, inst_target=inst_target,
                             inst_negatives=inst_negatives,
                             query_dropout=_dropout_range(query_dropout), freeze_query_encoder=freeze_query_encoder,
                             freeze_encoder=freeze_encoder, extractor_input=extractor_input, recon_weight=recon_weight,
                             init=str(init) if init else None,
                             precomputed=str(precomputed) if precomputed else None,
                             tracks=str(tracks) if tracks else None, tracks_share=tracks_share, workers=workers,
                             threads=threads, accelerator=accelerator,
                             devices=int(devices) if devices.isdigit() else devices, precision=precision, seed=seed,
                             val_every=val_every, ckpt_every=val_every, resume=not fresh, command=command_line())
    cfg.check()  # a bad option fails before the progress bar
    columns = (TextColumn("[progress.description]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("training", total=steps, info="")

        def update(step: int, total: int, m: dict) -> None:
            info = f"loss {m['loss']:.3f} mix acc {m['mix_acc']:.2f}"
            progress.update(task, completed=step, info=info)
            if not console.is_terminal and step % 25 == 0:  # a log file gets a line now and then instead of a bar
                console.print(f"step {step}/{total}: {info}")

        history = train_encoder(cfg, progress=update, log=console.print)
    val = history["val"][-1] if history["val"] else {}
    second = (f"effect classification acc {val.get('cls_acc', float('nan')):.3f}" if objective == "classify" else
              f"instrument acc {val.get('inst_acc', float('nan')):.3f}")
    console.print(f"model in [bold]{out / 'model'}[/] (step {history['step']}; val mixture acc "
                  f"{val.get('mix_acc', float('nan')):.3f}, {second})")


@train_app.command("average")
def train_average_command(
    models: list[Path] = typer.Argument(..., help="Two or more checkpoint folders of one kind and network, best "
                                        "fine-tuned from one shared start (a model soup)."),
    out: Path = typer.Option(..., "--out", "-o", help="The averaged checkpoint folder."),
) -> None:
    """Average the weights of checkpoints (a uniform model soup); writes a checkpoint with a model card."""
    from fxlens.train import command_line
    from fxlens.train.average import average_checkpoints

    folder = average_checkpoints(models, out, command=command_line())
    console.print(f"average of {len(models)} checkpoints in [bold]{folder}[/]")


@bench_app.command("speed")
def bench_speed_command(
    model: Optional[Path] = typer.Option(None, "--model", help="An encoder checkpoint folder (default: shipped small)."),
    seconds: float = typer.Option(10.0, help="Clip length for the encoder (stereo, 44.1 kHz)."),
    batch: str = typer.Option("1,8", help="Comma-separated batch sizes."),
    repeats: int = typer.Option(3, help="Timed runs per figure (median reported)."),
    part: str = typer.Option("all", help="What to time: encoder, features (the recognition features on 1.5 s "
                             "windows, eager and exported), analyze (the main job on 10 s and 3 min recordings), "
                             "match (fxlens match's defaults on 8 s and 3 min files), or all."),
    json_out: Path = typer.Option(Path("bench-speed.json"), "--json", help="Where to write the JSON results."),
) -> None:
    """Speed (x real time) of the effects encoder (mixture embeddings, text and audio queries), of the recognition
    features that `fxlens analyze` computes per 1.5 s window, and of `fxlens analyze` itself."""
    import json

    import torch

    from fxlens.atomic import write_text_atomic
    from fxlens.bench.speed import (TARGET_EMBED, TARGET_FEATURES, bench_analyze, bench_embedding, bench_features,
                                    bench_match, cases_markdown, machine_description)
    from fxlens.models.encoder import load_encoder

    try:
        batches = tuple(int(b) for b in batch.split(","))
    except ValueError:
        raise FxlensError(f"--batch must be comma-separated integers, got {batch!r}") from None
    if seconds < 0.5 or repeats < 1 or any(b < 1 for b in batches):
        raise FxlensError("--seconds must be >= 0.5, --repeats >= 1 and batch sizes >= 1")
    if part not in ("all", "encoder", "features", "analyze", "match"):
        raise FxlensError(f"--part must be encoder, features, analyze, match or all, got {part!r}")
    payload = {"benchmark": "speed", "machine": machine_description(), "threads": torch.get_num_threads()}
    _warn_if_cpu_busy()

    def verdict(rows, target, what):
        worst = min(r["x_real_time"] for r in rows)
        console.print(f"slowest case {worst:.0f}x real time (target {target:.0f}x {what}): "
                      + ("[green]met[/]" if worst >= target else "[red]missed[/]"))

    if part in ("all", "encoder"):
        rows = bench_embedding(load_encoder(model), seconds, batches, repeats)
        console.print(cases_markdown(rows, "embedding"))
        verdict(rows, TARGET_EMBED, "for the small encoder")
        payload.update({"model": str(model or "shipped encoder-small"), "rows": rows})
    if part in ("all", "features"):
        frows = bench_features(1.5, batches, repeats)
        console.print(cases_markdown(frows, "features, 1.5 s windows"))
        verdict([r for r in frows if r["batch"] == 1 and "eager" in r["case"]], TARGET_FEATURES,
                "per clip, eager, batch 1")
        payload["feature_rows"] = frows
    if part in ("all", "analyze"):
        arows = bench_analyze(repeats=repeats)
        console.print(cases_markdown(arows, "fxlens analyze (shipped models)"))
        payload["analyze_rows"] = arows
    if part in ("all", "match"):
        mrows = bench_match(repeats=repeats)
        console.print(cases_markdown(mrows, "fxlens match (shipped encoder, gradient steps)"))
        payload["match_rows"] = mrows
    console.print(f"wrote {write_text_atomic(json_out, json.dumps(payload, indent=2) + chr(10))}")


@app.command()
def embed(
    files: list[Path] = typer.Argument(..., help="Audio files (any common format, rate and channel count)."),
    query: Optional[str] = typer.Option(None, "--query", help="Text query: the instrument whose effects to embed."),
    query_audio: Optional[Path] = typer.Option(None, "--query-audio", help="An example of the instrument instead."),
    out: Path = typer.Option(Path("embeddings.npy"), "--out", help="emb.npy (N x 128 array) or emb.json."),
    model: Optional[Path] = typer.Option(None, "--model", help="An encoder checkpoint folder (default: shipped small)."),
) -> None:
    """Effects embeddings of audio files (mixture level, or one instrument's with --query / --query-audio)."""
    from rich.progress import Progress

    from fxlens.tasks.embed import embed_files

    if query is not None and query_audio is not None:
        raise FxlensError("give --query or --query-audio, not both")
    if out.suffix.lower() not in (".npy", ".json"):
        raise FxlensError(f"--out must end in .npy or .json, got '{out.name}'")
    with Progress(console=console) as progress:
        task = progress.add_task("embedding", total=len(files))
        result = embed_files(files, out, query=query, query_audio=query_audio, model=model,
                             progress=_progress_callback(progress, task))
    console.print(f"{result['n']} embeddings ({result['dim']}-d) -> [bold]{out}[/]")


@app.command()
def match(
    input: Path = typer.Argument(..., help="Your audio: the file to process (any common format, rate, 1-8 channels)."),
    reference: Path = typer.Argument(..., help="The reference whose effects you want: the same kind of audio as "
                                               "yours (a stem for a stem, a mix for a mix)."),
    output: Path = typer.Argument(..., help="Output .wav (float) or .flac (24-bit); the chain is written beside "
                                            "it as <name>.preset.json."),
    query: Optional[str] = typer.Option(None, "--query", help="Match one instrument's effects inside the reference "
                                                              "mix (e.g. 'bass'); your audio should be that instrument. "
                                                              "Experimental: not reliable yet (docs/match.md)."),
    query_audio: Optional[Path] = typer.Option(None, "--query-audio", help="An example clip of the instrument instead."),
    blend: Optional[Path] = typer.Option(None, "--blend", help="A second reference: aim between the two (FXencoder's "
                                                               "interpolation)."),
    blend_amount: float = typer.Option(0.5, "--blend-amount", help="With --blend: 0 = the reference, 1 = the blend."),
    effects: Optional[str] = typer.Option(None, "--effects", help="The chain to set, comma-separated, in order "
                                                                  "(default: the paper's seven: parametric_eq, "
                                                                  "multiband_compressor, stereo_imager, gain, "
                                                                  "distortion, delay, limiter)."),
    method: str = typer.Option("grad", "--method", help="grad (gradient steps through the chain and encoder) or "
                                                        "cmaes (gradient-free; slower)."),
    iterations: int = typer.Option(20, "--iterations", help="Gradient steps or CMA-ES generations (more steps "
                                                            "fit the embedding closer, not the sound: docs/match.md)."),
    excerpt: float = typer.Option(8.0, "--excerpt", help="Seconds of your audio the optimizer listens to (evenly "
                                                         "spaced 2 s windows); the whole file is rendered at the end."),
    loudness: str = typer.Option("input", "--loudness", help="Output level: input (the same loudness as your audio), "
                                                             "reference, or off (as the chain leaves it)."),
    full_ranges: bool = typer.Option(False, "--full-ranges", help="Search every parameter's full range instead "
                                                                  "of the encoder's training ranges."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the result (distances, steps, preset) "
                                                                 "as JSON here."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write a figure (average spectra of input, reference "
                                                             "and result; distance per step) here (PNG/SVG/PDF)."),
    model: Optional[Path] = typer.Option(None, "--model", help="An encoder checkpoint folder (default: shipped small)."),
    seed: int = typer.Option(0, "--seed", help="Seed of CMA-ES."),
) -> None:
    """Put a reference's effects on your audio: set an effect chain by optimizing through the effects encoder."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from fxlens.report import preset_table
    from fxlens.tasks.match import DEFAULT_CHAIN, LOUDNESS_MODES, OPTIMIZERS, match_files

    if query is not None and query_audio is not None:
        raise FxlensError("give --query or --query-audio, not both")
    if method not in OPTIMIZERS:
        raise FxlensError(f"--method must be one of {', '.join(OPTIMIZERS)}, got '{method}'")
    if loudness not in LOUDNESS_MODES:
        raise FxlensError(f"--loudness must be one of {', '.join(LOUDNESS_MODES)}, got '{loudness}'")
    if iterations < 1:
        raise FxlensError("--iterations must be at least 1")
    if not excerpt > 0:
        raise FxlensError("--excerpt must be positive")
    if not 0.0 <= blend_amount <= 1.0:
        raise FxlensError("--blend-amount must lie between 0 and 1")
    chain = _split_names(effects) or list(DEFAULT_CHAIN)
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TextColumn("distance {task.fields[best]}"), TimeRemainingColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("matching", total=None, best="-")

        def update(k: int, total: int, best: float) -> None:
            progress.update(task, completed=k, total=total, best=f"{best:.4f}")

        result, preset_path = match_files(input, reference, output, query=query, query_audio=query_audio,
                                          blend_path=blend, blend_amount=blend_amount,
                                          json_path=json_out, plot_path=plot, model=model, effects=chain, method=method,
                                          iterations=iterations, excerpt_seconds=excerpt, loudness=loudness,
                                          param_ranges=None if full_ranges else "training", seed=seed,
                                          progress=update)
    console.print(preset_table(result.preset, title=f"{input.name} -> like {reference.name}"))
    what = f" (query: {result.query})" if result.query else ""
    console.print(f"effects-embedding distance to the reference{what}, cosine, 0 = the same: "
                  f"{result.distance_before:.3f} as it is -> [bold]{result.distance_after:.3f}[/] through the chain "
                  f"({result.method}, {result.iterations} step{'s' if result.iterations != 1 else ''} on "
                  f"{result.excerpt_seconds:.1f} s)")
    for note in result.notes:
        console.print(f"[yellow]note:[/] {note}")
    written = [output, preset_path] + [p for p in (json_out, plot) if p is not None]
    console.print("wrote " + ", ".join(f"[bold]{p}[/]" for p in written))


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point: run the CLI, turning fxlens errors into one line and a non-zero exit code."""
    try:
        app(args=argv, prog_name="fxlens")
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except FxlensError as e:
        err_console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        return 1
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130
    return 0


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
