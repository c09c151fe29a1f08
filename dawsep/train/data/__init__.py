"""Synthetic Slakh-style training data: MIDI generation, fluidsynth rendering, augmentation.

Modules (rendering never imports torch; only ``dataset`` does):

- ``theory``, ``arrange``: harmony and the generated five-part arrangements (seven styles),
  written on an ``arrange_frame`` by ``arrange_piano`` and ``arrange_band``.
- ``m21``: music21 corpus pieces arranged over the stems; ``piano_solo``: solo piano performances.
- ``render``: FluidSynth via ctypes, every part in one pass to its own buffer (audio groups).
- ``sampler``: numpy sample playback of a ``samples`` set: ``iowa`` (the Iowa Steinway, tuned by
  ``pitch``), ``hydrogen`` and ``oneshot`` drum kits (GM-mapped by ``drum_map``);
  ``timidity``: the ``freepats`` patches through TiMidity++; ``procedural_piano``: a physically
  motivated piano.
- ``production``: random pedalboard chains per stem; the integer-exact 24-bit mix.
- ``procedural``: random wavetable voices for bass/guitar/other (extra timbres).
- ``soundfonts``, ``sources``: the named timbre sources of a corpus and which part plays on which.
- ``song``, ``corpus``: one song folder, and the deterministic, resumable, parallel corpus build.
- ``heldout``, ``sf2``: the held-out rules (MuseScore General and its samples by content hash,
  Salamander, the AVL kits and The Black Pearl; five composers), enforced; ``sf2_write`` writes
  small SF2 files for tests and tools.
- ``dataset``, ``cache``: PyTorch datasets for separation and transcription with augmentation,
  reading stems from an int16 memory-mapped cache.
- ``plots``, ``demo``: sanity pictures and the shipped demo song.

Layout: ``DATA/<split>/<song>/{mixture,piano,bass,drums,guitar,other}.flac``, ``piano.mid``, ``meta.json``.
"""
