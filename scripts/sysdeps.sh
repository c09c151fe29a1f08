#!/usr/bin/env bash
# Debian packages the tests and the data generator need: a real VST3 plugin for the chain tests
# (zam-plugins), fluidsynth and corpus v2's timbre sources (docs/data/README.md): FluidR3, TimGM6mb,
# GeneralUser GS (minuet-data), Airfont 320 (denemo-data), OPL3 FM, the Hydrogen drum kits, Freepats
# (played by timidity), the Sonic Pi and LMMS one-shot drums. MuseScore
# General is held out: the Lite SF3 renders the test split, and the lossless SF2 is the PCM reference
# the generator hashes every sample against (GeneralUser reuses some of its samples).
# Installs only what is missing; a no-op on a prepared machine. Other scripts pass their own
# package list as arguments (scripts/plugin-deps.sh).
set -euo pipefail
pkgs=("$@")
((${#pkgs[@]})) || pkgs=(zam-plugins fluidsynth fluid-soundfont-gm timgm6mb-soundfont musescore-general-soundfont-small
                      musescore-general-soundfont-lossless minuet-data denemo-data opl3-soundfont
                      hydrogen-drumkits hydrogen-data freepats timidity sonic-pi-samples lmms-common)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
((${#missing[@]})) || exit 0
echo "sysdeps: installing ${missing[*]}"
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
