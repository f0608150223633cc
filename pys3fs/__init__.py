"""pys3fs: mount an S3 bucket as a POSIX filesystem through FUSE.

Library use::

    from pys3fs import mount

    with mount("bucket", "/mnt/data", {"url": "http://127.0.0.1:9000"}) as m:
        open(m.path("hello.txt"), "w").write("hi")

See :func:`pys3fs.library.mount`.
"""

__version__ = "0.1.0"

from .library import Mount, mount  # noqa: E402

__all__ = ["Mount", "mount", "__version__"]
