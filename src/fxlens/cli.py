"""`fxlens <group> <command>`: parses arguments and calls tasks, bench and train; nothing else lives here.

Every `FxlensError` (bad input) becomes one line on stderr and exit code 1 — never a traceback.
"""

from __future__ import annotations

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
app.add_typer(fx_app, name="fx")
app.add_typer(data_app, name="data")
app.add_typer(bench_app, name="bench")


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
    console.print(info_table(rows, title=str(file)))


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


def _split_names(text: Optional[str]) -> Optional[list[str]]:
    if text is None:
        return None
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise FxlensError("--effects needs at least one effect name")
    return names


@fx_app.command("apply")
def fx_apply(
    input: Path = typer.Argument(..., help="Input audio file."),
    output: Path = typer.Argument(..., help="Output .wav or .flac; its preset is written beside it as <name>.preset.json."),
    preset: Optional[Path] = typer.Option(None, "--preset", "-p", help="Preset JSON to apply."),
    random: bool = typer.Option(False, "--random", help="Apply a random chain instead of a preset."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random chain."),
    effects: Optional[str] = typer.Option(None, "--effects", help="Comma-separated pool for --random (default: all main effects)."),
    tail: bool = typer.Option(False, "--tail", help="Keep delay/reverb tails (the output grows by their length)."),
) -> None:
    """Put effects on a file, from a preset or a random chain; writes the audio and the exact preset used."""
    from fxlens.report import preset_table
    from fxlens.tasks.process import apply_to_file

    if (preset is None) == (not random):
        raise FxlensError("give exactly one of --preset P.json or --random")
    if effects is not None and not random:
        raise FxlensError("--effects only goes with --random")
    result = apply_to_file(input, output, preset_file=preset, random_effects=_split_names(effects), seed=seed,
                           keep_tail=tail)
    console.print(preset_table(result.preset))
    console.print(f"wrote [bold]{result.output}[/] ({result.seconds:.2f} s) and [bold]{result.preset_path}[/]")


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
