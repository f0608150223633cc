#!/usr/bin/env bash
# Unmount the demo mount and stop the demo S3 server started by scripts/demo.sh.
cd "$(dirname "$0")/.."
ROOT="$PWD/.demo"
if grep -q " $ROOT/mnt " /proc/self/mounts 2>/dev/null; then
    fusermount -u "$ROOT/mnt" || umount -l "$ROOT/mnt"
    echo "unmounted $ROOT/mnt"
fi
if [ -f "$ROOT/server.pid" ]; then
    kill "$(cat "$ROOT/server.pid")" 2>/dev/null && echo "stopped the demo S3 server"
    rm -f "$ROOT/server.pid"
fi
