"""The ``live`` command: a preset's chain in real time inside a pyo server (the ``live`` extra)."""
from __future__ import annotations

import click


@click.command()
@click.option("--preset", "-p", required=True, help="Preset name or .toml: its chain, separation step included.")
@click.option("--input", "input_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Play this file through the chain (instead of a live input).")
@click.option("--device", "input_device", type=int, default=None, help="Input device index (live input).")
@click.option("--output-device", type=int, default=None, help="Output device index.")
@click.option("--offline", "offline", type=click.Path(dir_okay=False), default=None,
              help="Render --input through the same real-time path with pyo's offline server to this file.")
@click.option("--block-size", type=click.IntRange(32, 8192), default=1024, show_default=True)
@click.option("--sample-rate", type=int, default=None, help="Server rate (default: the input file's, else 44100).")
@click.option("--segment-seconds", type=click.FloatRange(0.05, 60), default=None,
              help="Separator chunk: shorter means lower latency and lower quality (default: the model's).")
@click.option("--seconds", type=float, default=None, help="Stop after this long (live input).")
@click.option("--buffer-samples", type=int, default=None,
              help="Worker-thread buffer added to the latency (default: two blocks).")
@click.option("--midi-out", "midi_output_device", type=int, default=None,
              help="Send the preset's transcription live to this MIDI output device.")
@click.option("--midi-file", type=click.Path(dir_okay=False), default=None,
              help="Also write the live transcription to this MIDI file.")
def live(preset, input_file, input_device, output_device, offline, block_size, sample_rate, segment_seconds, seconds,
         buffer_samples, midi_output_device, midi_file):
    """Run a preset's chain in real time inside a pyo server (needs the `live` extra).

    Reports block times against the block deadline, overruns (dropouts) and the latency.
    """
    from dawsep.live import run_live
    from dawsep.presets import load_preset

    report = run_live(load_preset(preset), input_file=input_file, offline=offline, block_size=block_size,
                      sample_rate=sample_rate, input_device=input_device, output_device=output_device,
                      segment_seconds=segment_seconds, seconds=seconds, buffer_samples=buffer_samples,
                      midi_file=midi_file, midi_output_device=midi_output_device)
    click.echo(report.summary(), err=True)
    if report.output:
        click.echo(report.output)
