"""``dawsep-train``: training-side commands (needs the ``train`` extra).

Thin: parse options, call the library, map :class:`DawsepError` to its exit code.
"""
from __future__ import annotations

import functools
import json
import os

import click

from dawsep.errors import DawsepError

DEFAULT_DATA = os.path.join(os.path.expanduser("~"), ".cache", "dawsep", "data")


def _errors(fn):
    @functools.wraps(fn)
    def wrapper(*a, **kw):
        try:
            return fn(*a, **kw)
        except DawsepError as e:
            click.echo(f"error: {e}", err=True)
            raise SystemExit(e.exit_code) from None

    return wrapper


@click.group()
def main() -> None:
    """dawsep training tools: synthetic data, training, export."""


@main.group()
def data() -> None:
    """Synthesise and inspect the Slakh-style training corpus."""


@data.command()
@click.option("--out", "out", type=click.Path(file_okay=False), default=DEFAULT_DATA, show_default=True,
              help="Corpus folder (DATA/<split>/<song>/...).")
@click.option("--hours", type=float, default=10.0, show_default=True, help="Hours of train mixtures.")
@click.option("--piano-hours", type=float, default=5.0, show_default=True, help="Hours of train solo piano.")
@click.option("--valid-hours", type=float, default=None, help="Valid mixtures (default 5 % of --hours).")
@click.option("--test-hours", type=float, default=None, help="Test mixtures (default 5 % of --hours).")
@click.option("--valid-piano-hours", type=float, default=None, help="Valid solo piano (default 5 % of --piano-hours).")
@click.option("--test-piano-hours", type=float, default=None, help="Test solo piano (default 5 % of --piano-hours).")
@click.option("--song-seconds", type=float, default=30.0, show_default=True, help="Mean song length.")
@click.option("--seed", type=int, default=0, show_default=True, help="Master seed: same seed, same corpus.")
@click.option("--procedural-fraction", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Share of bass/guitar/other parts (train/valid) played by random procedural voices.")
@click.option("--jobs", "-j", type=int, default=2, show_default=True, help="Worker processes.")
@click.option("--quiet", is_flag=True, help="No per-song progress lines.")
@_errors
def synth(out, hours, piano_hours, valid_hours, test_hours, valid_piano_hours, test_piano_hours, song_seconds, seed,
          procedural_fraction, jobs, quiet) -> None:
    """Render the corpus (resumable: complete songs are skipped)."""
    from dawsep.train.data.corpus import CorpusConfig, CorpusError, build, verify

    cfg = CorpusConfig(hours=hours, piano_hours=piano_hours, valid_hours=valid_hours, test_hours=test_hours,
                       valid_piano_hours=valid_piano_hours, test_piano_hours=test_piano_hours,
                       song_seconds=song_seconds, seed=seed, procedural_fraction=procedural_fraction)
    rep = build(out, cfg, jobs=jobs, progress=None if quiet else (lambda m: click.echo(m, err=True)))
    click.echo(f"built {rep.built} songs ({rep.audio_seconds / 3600:.2f} h) in {rep.wall_seconds:.0f} s "
               f"= {rep.realtime_factor:.1f}x real time with {jobs} jobs; skipped {rep.skipped} complete")
    click.echo(json.dumps(verify(out), indent=1))
    if rep.failed:
        for name, err in rep.failed[:5]:
            click.echo(f"FAILED {name}:\n{err}", err=True)
        raise CorpusError(f"{len(rep.failed)} songs failed: {', '.join(n for n, _ in rep.failed[:10])}")


@data.command()
@click.option("--out", "out", type=click.Path(file_okay=False), default="demo", show_default=True)
@click.option("--seconds", type=float, default=30.0, show_default=True)
@click.option("--seed", type=int, default=2026, show_default=True)
@_errors
def demo(out, seconds, seed) -> None:
    """Render the demo song (held-out soundfont) to OUT/demo_song.flac and OUT/demo_song.reference/."""
    from dawsep.train.data.demo import make_demo

    meta = make_demo(out, seconds=seconds, seed=seed)
    click.echo(f"demo: {meta['seconds']} s, {meta['info']['style']} at {meta['info']['bpm']} bpm, "
               f"soundfont {os.path.basename(meta['parts'][0]['soundfont'])} -> {out}/demo_song.flac")


@data.command(name="verify")
@click.argument("root", type=click.Path(exists=True, file_okay=False), default=DEFAULT_DATA)
@_errors
def verify_cmd(root) -> None:
    """Check the held-out rules over a corpus and print its size per split."""
    from dawsep.train.data.corpus import verify

    click.echo(json.dumps(verify(root), indent=1))


@data.command()
@click.argument("song_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--out", "out", type=click.Path(dir_okay=False), required=True, help="PNG to write.")
@_errors
def plot(song_dir, out) -> None:
    """Spectrograms of the mixture and stems, and the piano roll with pedal, as one PNG."""
    from dawsep.train.data.plots import plot_song

    plot_song(song_dir, out)
    click.echo(out)


if __name__ == "__main__":  # pragma: no cover
    main()
