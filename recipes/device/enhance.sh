#!/usr/bin/env bash
# The enhancer's GPU session in one command, run in the checkout on the device machine:
#   run(command="bash recipes/device/enhance.sh", carry=[".whl", ".pack"], timeout_s=600)
# Decodes the pack to WAV under WORK (the pack itself is left as it came), mixes the CPU stages
# 6-9's 24 h of noisy/clean pairs from its speech and noise on all cores, grows the bundled
# enhancer to LAYERS blocks and trains it for TRAIN_MINUTES of wall clock, then leaves the
# export, the logs and the timings in $OUT. Called again on a warm machine with a larger
# TRAIN_MINUTES, it reuses the pairs and tokens and trains on from its checkpoint. Extra
# arguments go to train.py. On the CPU, with small HOURS and TRAIN_MINUTES, it is tested end to
# end (tests/test_device_kit.py).
set -euo pipefail
: "${OUT:?set OUT, the folder that comes back}"
DEVICE=${DEVICE:-cuda:0}
TRAIN_MINUTES=${TRAIN_MINUTES:-5}  # with the pairs and tokens made first: about 8.5 of the 10 minutes
HOURS=${HOURS:-6}            # hours of training pairs in each augmented corpus; the first has twice as many
DEV_HOURS=${DEV_HOURS:-0.1}  # 76 dev pairs, as on the CPU (drawn from the pack's Opus speech)
LAYERS=${LAYERS:-6}          # 6 blocks: 5.3 M parameters, 10.7 MB in fp16 (the bundled 4: 4.0 M)
BATCH=${BATCH:-32}           # 8 s crops a step (the CPU stages: 4)
LR=${LR:-0.0005}             # peak learning rate (the CPU stages at batch 4: 3e-4)
ROOMS=${ROOMS:-"{train: 200, dev: 30}"}  # simulated shoebox rooms per split, made once (about 0.5 s each)
PACK=${PACK:-.pack}
WORK=${WORK:-/tmp/speechtok}
source recipes/device/env.sh
mkdir -p "$OUT"
start=$SECONDS
say() { echo "[$((SECONDS - start)) s] $*" | tee -a "$OUT/timings.txt"; }
"$PY" recipes/data/pack.py --unpack "$PACK" --out "$WORK/data" --workers "$(nproc)" > "$OUT/prepare.txt" 2>&1 \
    || { tail -20 "$OUT/prepare.txt"; exit 1; }
say "pack decoded"
pairs() {
    "$PY" recipes/data/prepare.py recipes/data/hparams/noisy.yaml --output_folder "$WORK/data" \
        --workers "$(nproc)" --simulated_rooms "$ROOMS" "$@" >> "$OUT/prepare.txt" 2>&1 \
        || { tail -20 "$OUT/prepare.txt"; exit 1; }
}
aug=(--noisy_train_hours "$HOURS" --noisy_dev_hours 0 --speed_range "[0.9, 1.1]" --noise_speed_range "[0.7, 1.4]")
pairs --noisy_train_hours "$(awk "BEGIN {print 2 * $HOURS}")" --noisy_dev_hours "$DEV_HOURS"
pairs --seed 4321 --noisy_name noisy_aug "${aug[@]}" --noise_kinds "{shaped: 2}"
pairs --seed 2468 --noisy_name noisy_aug2 "${aug[@]}" --noise_kinds "{shaped: 2, babble: 4}" --reverb_prob 0.5
say "pairs mixed ($(du -sh "$WORK/data" | cut -f1) in $WORK/data)"
train() {  # $1: processes reading audio and batches (a DataLoader's workers need /dev/shm)
    "$PY" recipes/lm/train.py recipes/lm/enhance/hparams/gpu.yaml --device "$DEVICE" --noprogressbar \
        --manifest_folder "$WORK/data/manifests" --train_manifests "[noisy_train.csv, noisy_aug_train.csv, noisy_aug2_train.csv]" \
        --token_cache "$WORK/tokens" --output_folder "$WORK/run" --encode_workers "$1" --num_workers "$(($1 > 2 ? 2 : $1))" \
        --init_from speechtok/pretrained/enhance-dmel-16k \
        --model "{dim: 256, n_layers: $LAYERS, n_heads: 4, mlp_ratio: 3.0, max_len: 1024, dropout: 0.1}" \
        --crop_frames 400 --batch_size "$BATCH" --lr "$LR" --warmup_steps 200 --steps_per_epoch 500 \
        --train_minutes "$TRAIN_MINUTES" --number_of_epochs 100000 "${@:2}" >> "$OUT/train.txt" 2>&1
}
say "/dev/shm: $(df -h /dev/shm 2>/dev/null | tail -1)"
# a failed run resumes (tokens, checkpoint and clock are kept) in one process, in case workers were the cause
train "$(nproc)" "$@" || { say "failed: $(tail -1 "$OUT/train.txt"); again without worker processes"
                           train 0 "$@" || { tail -40 "$OUT/train.txt"; exit 1; }; }
say "trained and exported"
grep -E "parameters|^epoch|exported" "$OUT/train.txt" | tail -8
cp -r "$WORK/run/export/enhance-dmel-16k" "$WORK/run/train_log.txt" "$OUT/"
