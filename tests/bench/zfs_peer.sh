# zfs-fuse as a benchmark peer, isolated from the host. Sourced by run.sh.
#
# zfs-fuse is one daemon per host with fixed paths: its control socket
# /var/run/zfs/zfs_socket, its lock /var/lock/zfs/zfs_lock, its pool cache
# /var/lib/zfs/zpool.cache (strings /sbin/zfs-fuse), its configuration
# /etc/zfs/zfsrc, and kstats it mounts at /zfs-kstat. So the daemon runs in
# a private mount namespace of its own (unshare -m --propagation private),
# where empty directories under ZFS_DIR are bind-mounted over /run (which
# holds /run/zfs and /run/lock; /var/run and /var/lock are links into it)
# and /var/lib/zfs, and a copy of Debian's default zfsrc over /etc/zfs/zfsrc
# (the same settings, written here so that a changed host file cannot
# change the figures). Its pool lives on a sparse file in ZFS_DIR and is
# mounted at ZFS_MNT inside that namespace only: the host's mount table
# never shows it. The namespace starts as a copy of the host's mounts: the
# copies of FUSE mounts (psmfs and passthrough_ll of this run, anybody
# else's) are detached at once, since a copy would keep its daemon's
# connection open after the host unmounted it (fusermount3 -u would then
# leave the daemon running). Everything that touches the mount runs in the namespace
# through `zfs_in` (nsenter -t PID -m). The daemon is the namespace's only
# resident process (unshare and the shell exec into it), so when it is
# stopped, by PID, the namespace and every mount in it are gone.
#
# Needs: root, /sbin/zfs-fuse (Debian package zfs-fuse), unshare, nsenter.
# Functions: zfs_setup DIR MNT GIB, zfs_start [new], zfs_stop, zfs_in CMD...,
# zfs_cold (stop + start: a new daemon with an empty ARC).

ZFS_PID=""
ZFS_POOL=psmbench

zfs_die() { echo "zfs_peer: $*" >&2; exit 1; }

zfs_check() {
  local t
  for t in zfs-fuse zpool zfs unshare nsenter; do
    PATH=/sbin:/usr/sbin:$PATH command -v "$t" >/dev/null ||
      zfs_die "$t not found: install the Debian package zfs-fuse (make bench does) and util-linux"
  done
  [ "$(id -u)" = 0 ] || zfs_die "zfs-fuse needs root (a mount namespace and a FUSE mount as root)"
  [ -e /etc/zfs/zfsrc ] || zfs_die "/etc/zfs/zfsrc missing (reinstall zfs-fuse): it is the bind target of our copy"
}

zfs_in() {  # run a command inside the daemon's mount namespace
  [ -n "$ZFS_PID" ] || zfs_die "zfs-fuse is not running"
  PATH=/sbin:/usr/sbin:$PATH nsenter -t "$ZFS_PID" -m -- "$@"
}

zfs_start() {  # zfs_start [new]: "new" before the pool exists
  rm -rf "$ZFS_DIR/run"; mkdir -p "$ZFS_DIR/run/lock" "$ZFS_DIR/lib"
  PATH=/sbin:/usr/sbin:$PATH unshare -m --propagation private -- /bin/bash -c '
    set -e
    # Detach our copies of every FUSE mount the host had: a copy holds its
    # connection open, so the host could not unmount it (psmfs, another
    # engineer'"'"'s test mount) while this namespace lives.
    awk '"'"'$3 ~ /^fuse(\.|blk$|$)/ { print $2 }'"'"' /proc/self/mounts | while read -r m; do
      umount -l "$(printf "%b" "$m")"
    done
    mount --bind "$1/run" /run
    mount --bind "$1/lib" /var/lib/zfs
    mount --bind "$1/zfsrc" /etc/zfs/zfsrc
    exec zfs-fuse --no-daemon --no-kstat-mount' zfs-ns "$ZFS_DIR" >>"$ZFS_DIR/zfs-fuse.log" 2>&1 &
  ZFS_PID=$!
  local i
  for i in $(seq 100); do
    [ -S "$ZFS_DIR/run/zfs/zfs_socket" ] && break
    kill -0 "$ZFS_PID" 2>/dev/null || { ZFS_PID=""; zfs_die "zfs-fuse exited at start; see $ZFS_DIR/zfs-fuse.log"; }
    sleep 0.1
  done
  [ -S "$ZFS_DIR/run/zfs/zfs_socket" ] || zfs_die "zfs-fuse made no socket in 10 s; see $ZFS_DIR/zfs-fuse.log"
  # A restart: the pool comes back from our zpool.cache (the daemon may
  # take a moment to open it); mount its file system. A run must never go
  # on without it (psmbench would write into the bare directory).
  if [ "${1:-}" != new ]; then
    # (zpool.cache is written some time after a pool is created: a restart
    # soon after may not find it there, so import it from its file then.)
    for i in $(seq 20); do zfs_in zpool list -H "$ZFS_POOL" >/dev/null 2>&1 && break; sleep 0.1; done
    zfs_in zpool list -H "$ZFS_POOL" >/dev/null 2>&1 ||
      zfs_in zpool import -d "$ZFS_DIR" "$ZFS_POOL" >>"$ZFS_DIR/zfs-fuse.log" 2>&1 ||
      zfs_die "pool $ZFS_POOL not back after a restart; see $ZFS_DIR/zfs-fuse.log"
    zfs_in zfs mount -a >>"$ZFS_DIR/zfs-fuse.log" 2>&1 || true
    for i in $(seq 100); do zfs_in findmnt -rn -M "$ZFS_MNT" >/dev/null && return 0; sleep 0.1; done
    zfs_die "$ZFS_MNT not mounted in the namespace after zfs mount -a; see $ZFS_DIR/zfs-fuse.log"
  fi
}

zfs_setup() {  # zfs_setup DIR MNT GIB: a fresh pool on a sparse file, mounted at MNT
  ZFS_DIR=$1 ZFS_MNT=$2
  zfs_check
  rm -rf "$ZFS_DIR"; mkdir -p "$ZFS_DIR" "$ZFS_MNT"
  # Debian's /etc/zfs/zfsrc as shipped (zfs-fuse 0.7.0-25), comments dropped.
  printf '%s\n' 'vdev-cache-size = 10' 'max-arc-size = 100' 'zfs-prefetch-disable' \
    'fuse-attr-timeout = 3600' 'fuse-entry-timeout = 3600' \
    'fuse-mount-options = default_permissions' > "$ZFS_DIR/zfsrc"
  truncate -s "${3}G" "$ZFS_DIR/pool.img"
  zfs_start new
  zfs_in zpool create -m "$ZFS_MNT" "$ZFS_POOL" "$ZFS_DIR/pool.img" >>"$ZFS_DIR/zfs-fuse.log" 2>&1 ||
    zfs_die "zpool create failed; see $ZFS_DIR/zfs-fuse.log"
  zfs_in findmnt -rn -M "$ZFS_MNT" >/dev/null || zfs_die "pool created but $ZFS_MNT is not mounted"
}

zfs_stop() {  # unmount, stop the daemon by PID; the namespace goes with it
  [ -n "$ZFS_PID" ] || return 0
  zfs_in zfs umount -a >/dev/null 2>&1 || echo "zfs_peer: zfs umount -a failed; stopping the daemon anyway" >&2
  kill -TERM "$ZFS_PID" 2>/dev/null || true
  local i
  for i in $(seq 100); do kill -0 "$ZFS_PID" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$ZFS_PID" 2>/dev/null; then
    echo "zfs_peer: zfs-fuse $ZFS_PID did not stop in 10 s; SIGKILL" >&2
    kill -KILL "$ZFS_PID" 2>/dev/null || true
  fi
  wait "$ZFS_PID" 2>/dev/null || true
  ZFS_PID=""
}

zfs_cold() { sync; zfs_stop; zfs_start; }
