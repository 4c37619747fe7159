#!/usr/bin/env bash
# Builds LazyFS (https://github.com/dsrhaslab/lazyfs, a FUSE file system that keeps written
# data in its own page cache until fsync and can drop it on command) from a source tree,
# against Debian's packages, without any network download, and installs it under a prefix.
#
#   tuning/lazyfs-build.sh SRC_DIR [PREFIX]      (default PREFIX: /opt/lazyfs)
#
# SRC_DIR is a checkout of github.com/dsrhaslab/lazyfs. Tested with commit
# a47a5baea559020f29902662de77764b0cbd62ce (main, "Merge pull request #9"); the tree needs
# only its libs/libpcache and lazyfs folders. Run as root (apt-get); it installs
#   PREFIX/bin/lazyfs, PREFIX/lib/libpcache.so*   and leaves the source tree untouched.
#
# What is changed on the way, in a copy of the tree:
# * libpcache's CMakeLists fetches toml11 v3.7.1 and spdlog v1.10.0 from the network; they are
#   taken from Debian instead (libtoml11-dev 3.7.1, libspdlog-dev 1.10.0: the same versions).
# * lazyfs's CMakeLists reaches into libpcache's build folder for spdlog; it links Debian's.
# * LazyFS has no fallocate handler, so FUSE answers EOPNOTSUPP, and shardlog refuses appends
#   when it cannot reserve segment space. A handler is added that passes
#   fallocate(FALLOC_FL_KEEP_SIZE) through to the backing file (space reservation only: the
#   file size and contents, which LazyFS models, do not change) and refuses every other mode.
# * When the application opens a file with O_DIRECT, LazyFS opens the backing file with the
#   same flags and then reads it into unaligned buffers (EINVAL). LazyFS is itself the page
#   cache being modelled, so O_DIRECT is dropped when it opens backing files; O_DIRECT on the
#   mount still works from the application's side (the kernel sends the I/O to LazyFS as is).
# * LazyFS mounts through libfuse's subdir module, which forwards no fallocate: it gets a
#   --root-dir ROOT option instead (chroot into ROOT once mounted; the faults FIFO is opened
#   before). Mount with: lazyfs MNT --config-path CFG --root-dir ROOT -f
# * lfs_truncate returned an uninitialized variable: truncating a file LazyFS had cached
#   failed at random (ENOENT); it is initialized.
set -euo pipefail

src=${1:?usage: lazyfs-build.sh SRC_DIR [PREFIX]}
prefix=${2:-/opt/lazyfs}
src=$(cd "$src" && pwd)
[ -f "$src/libs/libpcache/CMakeLists.txt" ] && [ -f "$src/lazyfs/src/lazyfs.cpp" ] ||
    { echo "$src does not look like a LazyFS source tree" >&2; exit 1; }

if ! dpkg -s fuse3 libfuse3-dev libspdlog-dev libtoml11-dev cmake g++ pkg-config >/dev/null 2>&1; then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y \
        fuse3 libfuse3-dev libspdlog-dev libtoml11-dev cmake g++ pkg-config
fi

work=$(mktemp -d /var/tmp/lazyfs-build.XXXXXX)
trap 'rm -rf "$work"' EXIT
cp -a "$src/libs" "$src/lazyfs" "$work/"
python3 "$(dirname "$0")/lazyfs_patch.py" "$work"

jobs=${JOBS:-2}
cmake -S "$work/libs/libpcache" -B "$work/libs/libpcache/build" -DCMAKE_BUILD_TYPE=Release
nice -n 10 cmake --build "$work/libs/libpcache/build" -j "$jobs"
cmake -S "$work/lazyfs" -B "$work/lazyfs/build" -DCMAKE_BUILD_TYPE=Release -DLAZYFS_BUILD_TESTS=OFF \
    -DCMAKE_INSTALL_RPATH="$prefix/lib" -DCMAKE_BUILD_WITH_INSTALL_RPATH=ON
nice -n 10 cmake --build "$work/lazyfs/build" -j "$jobs"

install -d "$prefix/bin" "$prefix/lib"
cp -a "$work"/libs/libpcache/build/libpcache.so* "$prefix/lib/"
install -m 755 "$work/lazyfs/build/lazyfs" "$prefix/bin/lazyfs"
echo "installed $prefix/bin/lazyfs"
