#!/usr/bin/env bash
# Issue 16's comparison (docs/transcription.md, "Corpus v1 against corpus v2"): the shipped
# transcriber fine-tuned STEPS steps on corpus v1 and on an equal-hours part of corpus v2, same
# seed and settings, then both scored on the MuseScore General test split.
# Needs: ~/.cache/dawsep/data-v1 (--corpus-version 1 --hours 1 --piano-hours 0.6) and
# ~/.cache/dawsep/data (corpus v2 built first with --hours 1 --piano-hours 0.6; its train split then
# holds exactly that part of the plan). About 40 min on 2 cores, plus 4 min per scored model.
set -euo pipefail
cd "$(dirname "$0")/.."
C=${DAWSEP_CACHE:-$HOME/.cache/dawsep}
STEPS=${STEPS:-500}
V2S=$C/data-v2small
rm -rf "$V2S"; mkdir -p "$V2S/train"
for d in "$C"/data/train/*/; do ln -s "$d" "$V2S/train/$(basename "$d")"; done
ln -s "$C/data/valid" "$V2S/valid"; ln -s "$C/data-v1/test" "$V2S/test"
for v in v1 v2; do
  data=$([ $v = v1 ] && echo "$C/data-v1" || echo "$V2S")
  nice -n 2 .venv/bin/dawsep-train transcriber train --data "$data" --out "$C/runs/cmp-$v" \
    --init-from dawsep/models/transcriber-oaf.onnx --steps "$STEPS" --batch 8 --segment-seconds 5 \
    --valid-every 250 --valid-items 12 --workers 1 --threads 1 --seed 0 --lr 3e-4 --warmup 50 \
    --conditions '{"clean": 0.5, "mix": 0.25, "residue": 0.25}' --pos-weight '{"onset": 8, "offset": 8}' \
    > "$C/runs/cmp-$v.log" 2>&1 &
done
wait
.venv/bin/python scripts/score_transcribers.py --data "$C/data-v1" shipped "$C/runs/cmp-v1/last.pt" "$C/runs/cmp-v2/last.pt"
