#!/usr/bin/env bash
# Makes room in what travels to the GPU machine (64 MiB with the carried kit): the bundled models
# a device run does not read (all of speechtok/pretrained but KEEP) move to the git-ignored
# .offload/ and out of git's index, so they neither travel nor count. `--restore` puts them
# back and re-stages them from HEAD: run it as soon as the device calls are done, before any
# commit (a commit in between would delete them; the test suite, which loads them, says so).
#   bash recipes/device/offload.sh            # KEEP="dmel-16k enhance-dmel-16k" (the enhancer's run)
#   bash recipes/device/offload.sh --restore
set -euo pipefail
cd "$(dirname "$0")/../.."
KEEP=${KEEP:-dmel-16k enhance-dmel-16k}
git check-ignore -q .offload/ || { echo "offload.sh: .offload/ must be git-ignored, or it would travel" >&2; exit 1; }
if [ "${1:-}" = --restore ]; then
    for dir in .offload/*/; do
        [ -d "$dir" ] || continue
        name=$(basename "$dir")
        [ -e "speechtok/pretrained/$name" ] && { echo "offload.sh: speechtok/pretrained/$name exists; left $dir" >&2; exit 1; }
        mv "$dir" "speechtok/pretrained/$name"
        git reset -q -- "speechtok/pretrained/$name"
        echo "restored speechtok/pretrained/$name"
    done
    rmdir .offload 2>/dev/null || true
    exit 0
fi
mkdir -p .offload
for dir in speechtok/pretrained/*/; do
    name=$(basename "$dir")
    [[ " $KEEP " == *" $name "* ]] && continue
    git rm -r -q --cached --ignore-unmatch "speechtok/pretrained/$name"
    mv "speechtok/pretrained/$name" ".offload/$name"
    echo "offloaded speechtok/pretrained/$name ($(du -sh ".offload/$name" | cut -f1)); restore: bash $0 --restore"
done
