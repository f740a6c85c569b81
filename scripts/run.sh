#!/usr/bin/env bash
# make run: create a small default volume if there is none, mount it, and
# say how to use and unmount it.  Usage: run.sh BIN_DIR VOLUME MOUNTPOINT SIZE
set -euo pipefail
bin=$1 vol=$2 mnt=$3 size=$4
if [ ! -e "$vol/image" ]; then
  mkdir -p "$(dirname "$vol")"
  "$bin/psmctl" mkfs "$vol" --size "$size"
fi
mkdir -p "$mnt"
if mountpoint -q "$mnt"; then
  echo "$mnt is already mounted."
else
  "$bin/psmfs" "$vol" "$mnt"
fi
abs_mnt=$(cd "$mnt" && pwd)
cat <<MSG

psmfs volume $vol is mounted at $abs_mnt

  use it:           cp -a /etc/hostname $mnt/ && ls -l $mnt
  take a snapshot:  $bin/psmctl snapshot create $mnt first
  browse it:        ls $mnt/.snapshots/first
  list snapshots:   $bin/psmctl snapshot list $mnt
  status:           $bin/psmctl status $mnt
  unmount:          make stop      (or: fusermount3 -u $mnt)
  check offline:    $bin/psmctl fsck $vol      (after unmounting)
MSG
