#!/usr/bin/env python3
"""Adapts a copy of the LazyFS source tree for tuning/lazyfs-build.sh (see that script for why).

    lazyfs_patch.py TREE      TREE holds LazyFS's libs/ and lazyfs/ folders; edited in place.

Each edit names the exact text it replaces and fails loudly when that text is missing, so a
LazyFS version that moved on is noticed instead of being half-patched.
"""
import pathlib
import re
import sys


def edit(path: pathlib.Path, old: str, new: str, *, regex: bool = False) -> None:
    text = path.read_text()
    if regex:
        patched, count = re.subn(old, lambda _: new, text, count=1, flags=re.S)
    else:
        count = text.count(old)
        patched = text.replace(old, new, 1)
    if count == 0:
        sys.exit(f"lazyfs_patch: {path}: expected text not found:\n{old}")
    path.write_text(patched)


def use_debian_dependencies(tree: pathlib.Path) -> None:
    pcache = tree / "libs/libpcache/CMakeLists.txt"
    # toml11 and spdlog come from Debian's packages instead of FetchContent downloads.
    edit(pcache, r"include\(FetchContent\).*?set_target_properties\(spdlog[^\n]*\n",
         "find_package(toml11 REQUIRED)\nfind_package(spdlog REQUIRED)\n", regex=True)
    edit(pcache, "target_link_libraries(pcache toml11::toml11 spdlog)",
         "target_link_libraries(pcache toml11::toml11 spdlog::spdlog)")

    lazyfs = tree / "lazyfs/CMakeLists.txt"
    edit(lazyfs, "link_directories(../libs/libpcache/build/_deps/spdlog-build/)\n"
                 "include_directories(../libs/libpcache/build/_deps/spdlog-src/include)\n",
         "find_package(spdlog REQUIRED)\n")
    edit(lazyfs, "target_link_libraries(${CMAKE_PROJECT_NAME} fuse3 Threads::Threads libpcache.so)",
         "target_link_libraries(${CMAKE_PROJECT_NAME} fuse3 Threads::Threads libpcache.so spdlog::spdlog)")


FALLOCATE_DECL = """
    static int lfs_fallocate (const char* path, int mode, off_t offset, off_t length,
                              struct fuse_file_info* fi);
"""

FALLOCATE_DEF = """
// Added for shardlog's power-loss runs: space reservation (KEEP_SIZE) passes through to the
// backing file; it changes neither the size nor the contents that the cache models.
int LazyFS::lfs_fallocate (const char* path, int mode, off_t offset, off_t length,
                           struct fuse_file_info* fi) {

    std::shared_lock<std::shared_mutex> lock (cache_command_lock);

    if (mode != FALLOC_FL_KEEP_SIZE)
        return -EOPNOTSUPP;

    int fd = (fi == NULL) ? open (path, O_WRONLY) : (int)fi->fh;
    if (fd == -1)
        return -errno;

    int res = fallocate (fd, mode, offset, length) == -1 ? -errno : 0;

    if (fi == NULL)
        close (fd);

    return res;
}

} // namespace lazyfs
"""


def add_fallocate(tree: pathlib.Path) -> None:
    edit(tree / "lazyfs/include/lazyfs/lazyfs.hpp",
         "    static int lfs_unlink (const char* path);\n",
         "    static int lfs_unlink (const char* path);\n" + FALLOCATE_DECL)
    source = tree / "lazyfs/src/lazyfs.cpp"
    edit(source, "#include <dirent.h>\n", "#include <dirent.h>\n#include <fcntl.h>\n")
    edit(source, r"\n\} // namespace lazyfs\s*$", FALLOCATE_DEF, regex=True)


def backing_files_without_o_direct(tree: pathlib.Path) -> None:
    source = tree / "lazyfs/src/lazyfs.cpp"
    # lfs_open: the flags the application opened the mount file with.
    edit(source, "    int access_tmp = fi->flags;\n",
         "    int access_tmp = fi->flags & ~O_DIRECT;\n")
    # lfs_create
    edit(source, "    res = open (path, fi->flags, mode);\n",
         "    res = open (path, fi->flags & ~O_DIRECT, mode);\n")


ROOT_DIR_DECL = """
// Added for shardlog's power-loss runs (see root_dir_without_subdir_module in lazyfs_patch.py).
extern std::string root_dir;
extern int early_fifo_fd;

} // namespace lazyfs
"""

CHROOT_AT_INIT = """    cfg->use_ino          = 1;

    if (!root_dir.empty () && (chroot (root_dir.c_str ()) != 0 || chdir ("/") != 0)) {
        spdlog::critical ("[lazyfs]: cannot chroot to '{}': {}", root_dir, strerror (errno));
        exit (1);
    }
"""

ROOT_DIR_ARG = """        if (!strcmp (argv[i], "--root-dir") && i + 1 < argc) {

            root_dir = argv[++i];

        } else if (!strcmp (argv[i], "--config-path")) {
"""

EARLY_FIFO_OPEN = """    // With --root-dir the faults worker starts inside the chroot: open its FIFO now.
    if (!root_dir.empty ()) {
        if (std_config.FIFO_PATH_COMPLETED != "") {
            spdlog::critical ("[lazyfs]: --root-dir does not support fifo_path_completed");
            return -1;
        }
        early_fifo_fd = open (std_config.FIFO_PATH.c_str (), O_RDWR);
        if (early_fifo_fd < 0) {
            spdlog::critical ("[lazyfs.fifo]: failed to open fifo '{}' (error: {})",
                              std_config.FIFO_PATH.c_str (), strerror (errno));
            return -1;
        }
    }

    // Create engine and cache objects
"""


def root_dir_without_subdir_module(tree: pathlib.Path) -> None:
    """LazyFS relies on libfuse's subdir module (-o modules=subdir,subdir=ROOT) to find its
    backing files, and that module forwards no fallocate (nor ioctl, poll...): the
    application gets EOPNOTSUPP whatever LazyFS implements. Instead, `--root-dir ROOT` makes
    LazyFS chroot into ROOT once FUSE is mounted (in its init callback, before any request),
    so the absolute paths FUSE hands it name files under ROOT. The faults FIFO is opened
    before that."""
    header = tree / "lazyfs/include/lazyfs/lazyfs.hpp"
    edit(header, "\n} // namespace lazyfs\n", "\n" + ROOT_DIR_DECL)

    source = tree / "lazyfs/src/lazyfs.cpp"
    edit(source, "    cfg->use_ino          = 1;\n", CHROOT_AT_INIT)

    main = tree / "lazyfs/src/main.cpp"
    edit(main, "LazyFS fs;\n",
         "LazyFS fs;\n\nnamespace lazyfs {\nstd::string root_dir;\nint early_fifo_fd = -1;\n}\n")
    edit(main, "    fd_fifo = open (std_config.FIFO_PATH.c_str (), O_RDWR);\n",
         "    fd_fifo = early_fifo_fd >= 0 ? early_fifo_fd\n"
         "                                 : open (std_config.FIFO_PATH.c_str (), O_RDWR);\n")
    edit(main, '        if (!strcmp (argv[i], "--config-path")) {\n', ROOT_DIR_ARG)
    edit(main, "    // Create engine and cache objects\n", EARLY_FIFO_OPEN)


def truncate_result_initialized(tree: pathlib.Path) -> None:
    """lfs_truncate returns `res`, which only its rarely taken branches assign: a truncate of a
    cached file (every file LazyFS has seen) fails at random with a stale errno (ENOENT here)."""
    edit(tree / "lazyfs/src/lazyfs.cpp",
         "        spdlog::info (\"[lazyfs.ops]: {}(path={},size={})\", __FUNCTION__, path, truncate_size);\n"
         "    }\n\n    int res;\n",
         "        spdlog::info (\"[lazyfs.ops]: {}(path={},size={})\", __FUNCTION__, path, truncate_size);\n"
         "    }\n\n    int res = 0;\n")


EIO_READ_DECL = """
// Added for shardlog's storage-error runs (see eio_on_read in lazyfs_patch.py).
extern std::mutex eio_read_lock;
extern std::string eio_read_path;

} // namespace lazyfs
"""

EIO_READ_CHECK = """                      struct fuse_file_info* fi) {

    {
        // shardlog: the armed "eio-read" fault fails every read of a matching path.
        std::lock_guard<std::mutex> eio_guard (eio_read_lock);
        if (!eio_read_path.empty () && strstr (path, eio_read_path.c_str ()) != NULL)
            return -EIO;
    }

    this_ ()->trigger_crash_fault ("read", "before", path, "", CLEAR);
"""

EIO_READ_COMMAND = """            } else if (command_str.rfind ("lazyfs::eio-read", 0) == 0) {

                // shardlog: "lazyfs::eio-read::path=SUBSTRING" fails every later read of a
                // path containing SUBSTRING with EIO; "lazyfs::eio-read::off" stops it.
                std::string arg = command_str.substr (strlen ("lazyfs::eio-read"));
                std::lock_guard<std::mutex> eio_guard (eio_read_lock);
                if (arg.rfind ("::path=", 0) == 0 && arg.size () > strlen ("::path=")) {
                    eio_read_path = arg.substr (strlen ("::path="));
                    spdlog::critical ("[lazyfs.faults.worker]: eio-read armed for paths containing '{}'",
                                      eio_read_path);
                } else if (arg == "::off") {
                    eio_read_path.clear ();
                    spdlog::critical ("[lazyfs.faults.worker]: eio-read disarmed");
                } else {
                    spdlog::warn ("[lazyfs.faults.worker]: received: INVALID eio-read fault '{}'",
                                  command_str);
                }

            } else if (!strcmp (buffer, "lazyfs::clear-cache")) {
"""


def eio_on_read(tree: pathlib.Path) -> None:
    """A fault LazyFS does not have: EIO on every read of the files whose path contains a
    string (a bad sector under them), armed and disarmed through the faults FIFO
    (`lazyfs::eio-read::path=SUBSTRING`, `lazyfs::eio-read::off`). Writes and fsyncs are not
    affected. Used by `tuning/cluster-diskfull.py --fault eio-read`."""
    header = tree / "lazyfs/include/lazyfs/lazyfs.hpp"
    edit(header, "#include <regex>\n", "#include <cstring>\n#include <mutex>\n#include <regex>\n")
    edit(header, "\n} // namespace lazyfs\n", "\n" + EIO_READ_DECL)
    source = tree / "lazyfs/src/lazyfs.cpp"
    edit(source, "                      struct fuse_file_info* fi) {\n\n"
                 "    this_ ()->trigger_crash_fault (\"read\", \"before\", path, \"\", CLEAR);\n",
         EIO_READ_CHECK)
    main = tree / "lazyfs/src/main.cpp"
    edit(main, "int early_fifo_fd = -1;\n}\n",
         "int early_fifo_fd = -1;\nstd::mutex eio_read_lock;\nstd::string eio_read_path;\n}\n")
    edit(main, "            } else if (!strcmp (buffer, \"lazyfs::clear-cache\")) {\n",
         EIO_READ_COMMAND)


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    tree = pathlib.Path(sys.argv[1])
    use_debian_dependencies(tree)
    add_fallocate(tree)
    backing_files_without_o_direct(tree)
    root_dir_without_subdir_module(tree)
    truncate_result_initialized(tree)
    eio_on_read(tree)


if __name__ == "__main__":
    main()
