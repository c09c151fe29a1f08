"""Synthetic Slakh-style training data: MIDI generation, fluidsynth rendering, augmentation."""
