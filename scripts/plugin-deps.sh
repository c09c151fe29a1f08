#!/usr/bin/env bash
# Debian packages the VST3 plugin build needs (make plugin): JUCE 7 from Debian (modules + the
# CMake package in juce-tools; the VST3 SDK headers come with the modules), a compiler and the
# X/ALSA headers JUCE's modules include. ~150 packages, ~350 MB: juce-modules-source hard-depends
# on webkit/gtk. Installs only what is missing (a no-op on a prepared machine).
set -euo pipefail
exec "$(dirname "$0")/sysdeps.sh" juce-modules-source juce-tools cmake g++ make \
  libasound2-dev libxrandr-dev libxinerama-dev libxcursor-dev
