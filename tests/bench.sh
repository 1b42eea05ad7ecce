#!/usr/bin/env bash
# The project's own benchmark: unionfs-fuse against kernel overlayfs (and
# fuse-overlayfs when installed) on a small synthetic two-layer fixture.
# Prints a markdown table of median seconds and the ratio to the kernel.
# It asserts nothing about time; run it as root:
#
#   bash tests/bench.sh                 # default size, 3 runs per cell
#   SIZE=smoke REPS=1 bash tests/bench.sh   # tiny, for CI
#
# Environment: SIZE=smoke|default|large, REPS=3, BENCH_DIR=/var/tmp/unionfs-bench,
# IMPLS="kernel ours ours-pt-all fuse-overlayfs", BIN=target/release/unionfs-fuse.
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."

[ "$(id -u)" -eq 0 ] || { echo "bench.sh: run as root" >&2; exit 2; }
: "${SIZE:=default}" "${REPS:=3}" "${BENCH_DIR:=/var/tmp/unionfs-bench}"
: "${BIN:=$PWD/target/release/unionfs-fuse}"
case "$SIZE" in
    smoke)   DIRS=20;  FILES=20;  BIG_MB=16;  COPYUP=100 ;;
    default) DIRS=100; FILES=100; BIG_MB=512; COPYUP=1000 ;;
    large)   DIRS=300; FILES=100; BIG_MB=1024; COPYUP=2000 ;;
    *) echo "bench.sh: SIZE must be smoke, default or large" >&2; exit 2 ;;
esac
if [ -z "${IMPLS:-}" ]; then
    IMPLS="kernel ours ours-pt-all"
    command -v fuse-overlayfs >/dev/null && IMPLS="$IMPLS fuse-overlayfs"
fi
[ -x "$BIN" ] || cargo build --release --quiet
B=$BENCH_DIR
MNT=$B/merged

cleanup() { mountpoint -q "$MNT" 2>/dev/null && umount -l "$MNT"; true; }
trap cleanup EXIT

# --- fixture ---------------------------------------------------------------
if [ ! -f "$B/.done-$SIZE" ]; then
    rm -rf "$B"; mkdir -p "$B/base" "$B/top"
    echo "bench.sh: building the $SIZE fixture in $B" >&2
    for d in $(seq 1 "$DIRS"); do
        mkdir -p "$B/base/d$d" "$B/top/d$d"
        for f in $(seq 1 "$FILES"); do printf 'file %s/%s\n%0512d\n' "$d" "$f" 0 > "$B/base/d$d/f$f"; done
        # The top layer overrides a tenth of the files and deletes another tenth.
        for f in $(seq 1 10 "$FILES"); do echo "top $d/$f" > "$B/top/d$d/f$f"; done
        for f in $(seq 2 10 "$FILES"); do mknod "$B/top/d$d/f$f" c 0 0; done
    done
    head -c "$((BIG_MB << 20))" /dev/urandom > "$B/base/big.bin"
    mkdir -p "$B/src/tree"
    for d in $(seq 1 "$((DIRS / 2 + 1))"); do
        mkdir -p "$B/src/tree/s$d"
        for f in $(seq 1 "$FILES"); do echo "source $d $f" > "$B/src/tree/s$d/c$f.c"; done
    done
    tar cf "$B/src.tar" -C "$B/src" tree && rm -rf "$B/src"
    touch "$B/.done-$SIZE"
fi

mount_impl() { # IMPL
    rm -rf "$B/upper" "$B/work"; mkdir -p "$B/upper" "$B/work" "$MNT"
    case "$1" in
        kernel) mount -t overlay overlay -o "lowerdir=$B/top:$B/base,upperdir=$B/upper,workdir=$B/work" "$MNT" ;;
        ours) "$BIN" "$B/top:$B/base" "$B/upper" "$MNT" -o "workdir=$B/work" ;;
        ours-pt-all) "$BIN" "$B/top:$B/base" "$B/upper" "$MNT" -o "workdir=$B/work,passthrough=all" ;;
        fuse-overlayfs) fuse-overlayfs -o "lowerdir=$B/top:$B/base,upperdir=$B/upper,workdir=$B/work" "$MNT" ;;
    esac
}
umount_impl() { umount "$MNT" 2>/dev/null || umount -l "$MNT"; sleep 0.2; }
drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }
now() { date +%s.%N; }

# Workloads: name, cold (fresh mount + dropped caches) or warm, command.
WORKLOADS=(
    "find_cold|cold|find \$MNT -xdev >/dev/null"
    "stat_all_warm|warm|find \$MNT -printf '%s %m %i\n' >/dev/null"
    "ls_lR_warm|warm|ls -lR \$MNT >/dev/null"
    "seqread_cold|cold|dd if=\$MNT/big.bin of=/dev/null bs=1M status=none"
    "seqread_warm|warm|dd if=\$MNT/big.bin of=/dev/null bs=1M status=none"
    "write_fsync|fresh|dd if=/dev/zero of=\$MNT/new.bin bs=1M count=$BIG_MB conv=fsync status=none"
    "copyup|fresh|for f in \$(seq 1 $COPYUP); do d=\$(( (f % $DIRS) + 1 )); n=\$(( (f / $DIRS) * 10 + 3 )); echo x >> \$MNT/d\$d/f\$n 2>/dev/null || true; done"
    "create_rm|fresh|mkdir \$MNT/many && for i in \$(seq 1 $((COPYUP * 2))); do : > \$MNT/many/\$i; done && rm -rf \$MNT/many"
    "untar_rm|fresh|tar xf $B/src.tar -C \$MNT && rm -rf \$MNT/tree"
)

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

declare -A RESULT
for w in "${WORKLOADS[@]}"; do
    IFS='|' read -r name kind cmd <<< "$w"
    for impl in $IMPLS; do
        times=()
        if [ "$kind" = warm ]; then mount_impl "$impl"; eval "$cmd"; fi
        for _ in $(seq 1 "$REPS"); do
            if [ "$kind" != warm ]; then mount_impl "$impl"; [ "$kind" = cold ] && drop; fi
            s=$(now); eval "$cmd"; e=$(now)
            times+=("$(echo "$e - $s" | bc)")
            [ "$kind" != warm ] && umount_impl
        done
        [ "$kind" = warm ] && umount_impl
        RESULT[$name,$impl]=$(printf '%s\n' "${times[@]}" | median)
        echo "bench.sh: $name $impl ${RESULT[$name,$impl]}" >&2
    done
done

echo
echo "unionfs-fuse benchmark ($SIZE, median of $REPS), $(date -u +%Y-%m-%d), $(nproc) CPUs, kernel $(uname -r)"
echo
printf '| workload |'; for i in $IMPLS; do printf ' %s |' "$i"; done; echo
printf '|---|'; for _ in $IMPLS; do printf -- '---|'; done; echo
for w in "${WORKLOADS[@]}"; do
    name=${w%%|*}
    printf '| %s |' "$name"
    k=${RESULT[$name,kernel]:-}
    for i in $IMPLS; do
        v=${RESULT[$name,$i]}
        if [ -n "$k" ] && [ "$(echo "$k > 0" | bc)" = 1 ]; then
            printf ' %.3f (%.2fx) |' "$v" "$(echo "$v / $k" | bc -l)"
        else
            printf ' %.3f |' "$v"
        fi
    done
    echo
done
