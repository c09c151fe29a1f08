"""``dawsep`` command line: the command group, which maps errors and signals to exit codes, and
its commands (thin wrappers that parse and call the library): the batch commands in
:mod:`dawsep.cli_batch`, ``models``/``presets``/``info`` in :mod:`dawsep.cli_info`, ``live`` in
:mod:`dawsep.cli_live`.

Only click is imported at module level so ``dawsep --help`` is instant; each command imports
what it needs.

Exit codes: 0 all songs succeeded; 1 some songs failed (summary on stderr); 2 usage error;
3 audio format, 4 preset, 5 plugin, 6 model, 7 output path errors; 8 another run holds the
output folder; 9 no audio files found; 10 disk full; 130 Ctrl-C (SIGINT), 143 SIGTERM.
"""
from __future__ import annotations

import signal
import sys
import threading

import click

from dawsep import __version__
from dawsep.cli_batch import FORMATS, PHASES, render, separate, transcribe
from dawsep.cli_info import info, models, presets
from dawsep.cli_live import live
from dawsep.errors import BatchError, DawsepError

__all__ = ["FORMATS", "PHASES", "main"]  # FORMATS, PHASES: the choices the commands offer


def _on_sigterm(signum, frame):
    from dawsep.errors import Interrupted

    raise Interrupted(signum)


class _Group(click.Group):
    """Turns DawsepError into a one-line message and its exit code (no traceback); SIGINT and
    SIGTERM stop a run cleanly (finished songs recorded) with exit code 128 + the signal."""

    def invoke(self, ctx):
        main_thread = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, _on_sigterm) if main_thread else None
        try:
            return super().invoke(ctx)
        except BatchError as exc:
            click.echo(str(exc), err=True)
            sys.exit(exc.exit_code)
        except DawsepError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt as exc:
            signum = getattr(exc, "signum", signal.SIGINT)
            what = "interrupted (Ctrl-C)" if signum == signal.SIGINT else f"terminated ({signal.Signals(signum).name})"
            if ctx.invoked_subcommand in ("separate", "render", "transcribe"):
                what += (": songs finished so far are kept and listed in the output folder's manifest.json; "
                         "rerun the same command to do the rest")
            click.echo(what, err=True)
            sys.exit(128 + signum)
        finally:
            if main_thread:
                signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dawsep")
def main() -> None:
    """Separate songs into stems, render them through effect chains, transcribe piano to MIDI.

    \b
    Examples:
      dawsep separate songs/ -o stems/                 # every stem of every song
      dawsep separate song.mp3 -o out/ --stems piano,bass --format wav
      dawsep separate songs/ -o out/ --preset piano    # piano stem through the piano chain
      dawsep transcribe piano.flac -o midi/ --plot      # piano.mid + piano roll
      dawsep render stems/ -o out/ --preset bass --jobs 2
      dawsep presets list
      dawsep models list
      dawsep info song.flac
    """


for _command in (render, separate, transcribe, live, models, presets, info):
    main.add_command(_command)


if __name__ == "__main__":  # pragma: no cover
    main()
