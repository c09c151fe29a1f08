"""Synthetic Slakh-style training data: MIDI generation, fluidsynth rendering, augmentation.

Modules (rendering never imports torch; only ``dataset`` does):

- ``theory``, ``arrange``: harmony and the generated five-part arrangements (seven styles).
- ``m21``: music21 corpus pieces arranged over the stems; ``piano_solo``: solo piano performances.
- ``render``: FluidSynth via ctypes, every part in one pass to its own buffer (audio groups).
- ``production``: random pedalboard chains per stem; the integer-exact 24-bit mix.
- ``procedural``: optional random wavetable voices for bass/guitar/other (extra timbres).
- ``song``, ``corpus``: one song folder, and the deterministic, resumable, parallel corpus build.
- ``heldout``, ``soundfonts``: the held-out rules (MuseScore General; five composers), enforced.
- ``dataset``: PyTorch datasets for separation and transcription with augmentation.
- ``plots``, ``demo``: sanity pictures and the shipped demo song.

Layout: ``DATA/<split>/<song>/{mixture,piano,bass,drums,guitar,other}.flac``, ``piano.mid``, ``meta.json``.
"""
