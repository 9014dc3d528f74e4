"""A pass-through FUSE file system (fusepy's loopback, libfuse2): like NFS and sshfs it has no
RENAME_EXCHANGE, and keeps a removed file that is still open as a hidden one. Run as a script:
`python loopback_fs.py ROOT MOUNTPOINT`."""

import errno
import os
import sys
import threading

from fuse import FUSE, FuseOSError, Operations


class Loopback(Operations):
    def __init__(self, root: str) -> None:
        self.root = os.path.realpath(root)
        self.lock = threading.Lock()

    def __call__(self, op, path, *args):
        return super().__call__(op, self.root + path, *args)

    def access(self, path, mode):
        if not os.access(path, mode):
            raise FuseOSError(errno.EACCES)

    chmod, chown, mkdir, mknod, open = os.chmod, os.chown, os.mkdir, os.mknod, os.open
    readlink = os.readlink
    rmdir, unlink, utimens = os.rmdir, os.unlink, os.utime
    getxattr = listxattr = None

    def create(self, path, mode, fi=None):
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)

    def flush(self, path, fh):
        return os.fsync(fh)

    def getattr(self, path, fh=None):
        st = os.lstat(path)
        keys = ("st_atime", "st_ctime", "st_gid", "st_mode", "st_mtime", "st_nlink", "st_size")
        keys += ("st_uid",)
        return {k: getattr(st, k) for k in keys}

    def read(self, path, size, offset, fh):
        with self.lock:
            os.lseek(fh, offset, 0)
            return os.read(fh, size)

    def readdir(self, path, fh):
        return [".", "..", *os.listdir(path)]

    def release(self, path, fh):
        return os.close(fh)

    def rename(self, old, new):
        return os.rename(old, self.root + new)

    def symlink(self, target, source):
        return os.symlink(source, target)

    def truncate(self, path, length, fh=None):
        os.truncate(path, length)

    def write(self, path, data, offset, fh):
        with self.lock:
            os.lseek(fh, offset, 0)
            return os.write(fh, data)


if __name__ == "__main__":
    FUSE(Loopback(sys.argv[1]), sys.argv[2], foreground=True)
