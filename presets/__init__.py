"""Presets shipped with dawsep (installed as ``dawsep._presets``)."""
