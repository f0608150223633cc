"""Ways a mount is made and ended outside an interactive shell, and who may use it.

fstab lines mounted by mount(8) through mount.fuse, a systemd-style foreground daemon,
signals, unmount commands, the ``pys3fs.mount`` context manager, and allow_other with
default_permissions as seen by another local user. Each test checks that data written
through the mount ends up in S3 and that no mount or daemon is left behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time

import pytest
from conftest import PYS3FS, daemon_pids, force_unmount, is_mounted, mount_options

import pys3fs
from pys3fs.daemon import StartError

# The PATH a shell uses when it has none: mount(8) clears PATH from the environment
# (util-linux sanitize_env) before running /sbin/mount.fuse, which runs the helper
# through /bin/sh, so an fstab line finds ``pys3fs`` only in these directories.
SHELL_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NOBODY = 65534


def env_secret() -> str:
    """The secret key the tests hand pys3fs (isolated_env puts the server's in the env)."""
    return os.environ["AWS_SECRET_ACCESS_KEY"]


def alive(pid: int) -> bool:
    """Running and not a zombie waiting for a parent that is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def wait_exited(pids: list[int], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [p for p in pids if alive(p)], f"daemon still running: {pids}"


def wait_mounted(mountpoint: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not is_mounted(mountpoint):
        assert proc.poll() is None, f"pys3fs exited with {proc.returncode}"
        assert time.monotonic() < deadline, "mount did not appear"
        time.sleep(0.05)


def body(s3, bucket: str, key: str) -> bytes:
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


@pytest.fixture
def cleanup(request):
    """``cleanup(mountpoint)``: unmount and stop its daemons at the end, whatever happens."""

    def register(mountpoint: str) -> str:
        request.addfinalizer(lambda: force_unmount(mountpoint))
        return mountpoint

    return register


# -- fstab ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pys3fs_on_default_path():
    """Make ``pys3fs`` reachable the way mount(8) looks for it (a system-wide install).

    A symlink to this checkout's script is put in /usr/local/bin for the module and
    removed afterwards; an existing pys3fs there is used only if it is this one.
    """
    ours = os.path.realpath(PYS3FS)
    found = shutil.which("pys3fs", path=SHELL_DEFAULT_PATH)
    if found is not None:
        if os.path.realpath(found) != ours:
            pytest.skip(f"another pys3fs is installed at {found}")
        yield found
        return
    link = "/usr/local/bin/pys3fs"
    try:
        os.symlink(ours, link)
    except OSError as exc:
        pytest.skip(f"cannot install {link}: {exc.strerror}")
    try:
        yield link
    finally:
        if os.path.islink(link) and os.path.realpath(link) == ours:
            os.remove(link)


@pytest.mark.parametrize(
    "spec, fstype",
    [
        ("pys3fs#{bucket}", "fuse"),
        ("{bucket}", "fuse.pys3fs"),
        (PYS3FS + "#{bucket}", "fuse"),  # a virtualenv install, named by its full path
    ],
    ids=["hash-form", "subtype-form", "full-path-hash-form"],
)
def test_fstab_mount_write_read_umount(
    pys3fs_on_default_path, s3_server, s3, bucket, tmp_path, run, cleanup, spec, fstype
):
    mp = cleanup(str(tmp_path / "fstab-mnt"))
    os.mkdir(mp)
    options = ",".join(
        [
            "_netdev",
            "allow_other",
            f"url={s3_server.url}",
            "use_path_request_style",
            f"use_cache={tmp_path / 'cache'}",
        ]
    )
    fstab = tmp_path / "fstab"
    fstab.write_text(f"{spec.format(bucket=bucket)} {mp} {fstype} {options} 0 0\n")

    result = run("mount", "-T", str(fstab), mp, check=False)
    assert result.returncode == 0, result.stderr
    assert env_secret() not in result.stdout + result.stderr
    shown = run("mount").stdout.splitlines()
    assert any(line.startswith(f"{bucket} on {mp} type fuse.pys3fs") for line in shown)
    pids = daemon_pids(mp)
    assert len(pids) == 1

    with open(os.path.join(mp, "from-fstab.txt"), "w") as f:
        f.write("written through an fstab mount\n")
    with open(os.path.join(mp, "from-fstab.txt")) as f:
        assert f.read() == "written through an fstab mount\n"

    run("umount", mp)
    wait_exited(pids)
    assert not is_mounted(mp)
    assert body(s3, bucket, "from-fstab.txt") == b"written through an fstab mount\n"


# -- signals and unmount commands -----------------------------------------------------------
def test_sigterm_uploads_data_still_open_for_writing(mounter, s3, bucket):
    fs = mounter(bucket)
    [pid] = fs.pids
    fd = os.open(fs.path("open.bin"), os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"not yet flushed")
        os.kill(pid, signal.SIGTERM)
        wait_exited([pid])
        assert not is_mounted(fs.mountpoint)
        assert body(s3, bucket, "open.bin") == b"not yet flushed"
    finally:
        with contextlib.suppress(OSError):  # the mount is gone: ENOTCONN
            os.close(fd)


def test_lazy_fusermount_keeps_open_file_working_until_closed(mounter, run, s3, bucket):
    fs = mounter(bucket)
    pids = fs.pids
    fd = os.open(fs.path("lazy.bin"), os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"before unmount, ")
        busy = run("fusermount", "-u", fs.mountpoint, check=False)
        assert busy.returncode != 0  # a writer still has a file open
        assert is_mounted(fs.mountpoint)
        run("fusermount", "-u", "-z", fs.mountpoint)
        assert not is_mounted(fs.mountpoint)
        os.write(fd, b"after unmount")
    finally:
        os.close(fd)
    wait_exited(pids)
    assert body(s3, bucket, "lazy.bin") == b"before unmount, after unmount"


@pytest.mark.parametrize("how", ["umount", "fusermount -u", "SIGTERM", "SIGINT"])
def test_each_way_of_unmounting_leaves_no_daemon(mounter, run, s3, bucket, how):
    fs = mounter(bucket)
    pids = fs.pids
    assert len(pids) == 1
    with open(fs.path("kept.txt"), "w") as f:
        f.write(how)
    if how.startswith("SIG"):
        os.kill(pids[0], getattr(signal, how))
    else:
        run(*how.split(), fs.mountpoint)
    wait_exited(pids)
    assert not is_mounted(fs.mountpoint)
    assert daemon_pids(fs.mountpoint) == []
    assert body(s3, bucket, "kept.txt") == how.encode()


def test_remount_after_a_killed_daemon(mounter, run, s3, bucket, tmp_path):
    """kill -9 leaves a dead mount; pys3fs says so in one line, and fusermount -u clears it."""
    fs = mounter(bucket)
    os.kill(fs.pids[0], signal.SIGKILL)
    wait_exited(fs.pids)
    again = run(*fs.args, check=False, timeout=90)
    assert again.returncode != 0
    lines = again.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("pys3fs:"), again.stderr
    assert fs.mountpoint in lines[0] and "fusermount -u" in lines[0]
    assert daemon_pids(fs.mountpoint) == []
    run("fusermount", "-u", fs.mountpoint)
    run(*fs.args, timeout=90)
    fs.pids = daemon_pids(fs.mountpoint)
    s3.put_object(Bucket=bucket, Key="visible", Body=b"x")
    assert os.listdir(fs.mountpoint) == ["visible"]


# -- systemd style: pys3fs -f ---------------------------------------------------------------
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_foreground_serves_until_signal_then_exits_0(s3_server, s3, bucket, tmp_path, sig):
    mp = str(tmp_path / "fg")
    os.mkdir(mp)
    opts = f"url={s3_server.url},use_path_request_style,use_cache={tmp_path / 'cache'}"
    with open(tmp_path / "stderr", "w+") as err:
        proc = subprocess.Popen(
            [PYS3FS, bucket, mp, "-f", "-o", opts],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        try:
            wait_mounted(mp, proc)
            assert daemon_pids(mp) == [proc.pid]  # no fork: systemd's Type=simple sees it
            with open(os.path.join(mp, "fg.txt"), "w") as f:
                f.write("served in the foreground")
            assert os.listdir(mp) == ["fg.txt"]
            assert proc.poll() is None
            proc.send_signal(sig)
            assert proc.wait(timeout=60) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            force_unmount(mp)
        err.seek(0)
        log = err.read()
    assert not is_mounted(mp)
    assert body(s3, bucket, "fg.txt") == b"served in the foreground"
    assert f"mounting {bucket} on {mp}" in log  # logs go to stderr: the journal
    assert env_secret() not in log


def test_foreground_flushes_on_sigterm_after_its_log_pipe_closed(s3_server, s3, bucket, tmp_path):
    """journald restarted (stderr pipe gone) must not cost the data still open for writing."""
    mp = str(tmp_path / "fg")
    os.mkdir(mp)
    opts = f"url={s3_server.url},use_path_request_style,use_cache={tmp_path / 'cache'}"
    proc = subprocess.Popen(
        [PYS3FS, bucket, mp, "-f", "-d", "-o", opts],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_mounted(mp, proc)
        proc.stderr.close()  # the reader of the daemon's log goes away
        fd = os.open(os.path.join(mp, "pending.bin"), os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.write(fd, b"still open at SIGTERM")
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=60) == 0
        finally:
            with contextlib.suppress(OSError):
                os.close(fd)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        force_unmount(mp)
    assert not is_mounted(mp)
    assert body(s3, bucket, "pending.bin") == b"still open at SIGTERM"


# -- library --------------------------------------------------------------------------------
def library_options(s3_server, tmp_path) -> dict:
    return {
        "url": s3_server.url,
        "use_path_request_style": True,
        "use_cache": str(tmp_path / "cache"),
    }


def test_library_mount_context_manager(s3_server, s3, bucket, tmp_path, cleanup):
    mp = cleanup(str(tmp_path / "lib"))
    os.mkdir(mp)
    with pys3fs.mount(bucket, mp, library_options(s3_server, tmp_path)) as m:
        assert is_mounted(mp)
        os.mkdir(m.path("dir"))
        with open(m.path("dir", "a.txt"), "w") as f:
            f.write("from python")
        with open(m.path("dir", "a.txt")) as f:
            assert f.read() == "from python"
        assert os.listdir(m.path("dir")) == ["a.txt"]
        process = m.process
    assert not is_mounted(mp)
    assert process.poll() is not None
    assert daemon_pids(mp) == []
    assert body(s3, bucket, "dir/a.txt") == b"from python"


def test_library_unmounts_when_the_block_raises(s3_server, s3, bucket, tmp_path, cleanup):
    mp = cleanup(str(tmp_path / "lib"))
    os.mkdir(mp)
    with (
        pytest.raises(KeyError),
        pys3fs.mount(bucket, mp, library_options(s3_server, tmp_path)) as m,
    ):
        with open(m.path("b.txt"), "w") as f:
            f.write("kept")
        raise KeyError("boom")
    assert not is_mounted(mp)
    assert daemon_pids(mp) == []
    assert body(s3, bucket, "b.txt") == b"kept"


def test_library_debug_shows_daemon_log_on_stderr(s3_server, s3, bucket, tmp_path, cleanup, capfd):
    mp = cleanup(str(tmp_path / "lib"))
    os.mkdir(mp)
    seen = ""
    with pys3fs.mount(bucket, mp, library_options(s3_server, tmp_path), debug=True) as m:
        with open(m.path("debugged.txt"), "w") as f:
            f.write("x")
        deadline = time.monotonic() + 30
        while "debugged.txt" not in seen and time.monotonic() < deadline:
            seen += capfd.readouterr().err
            time.sleep(0.05)
    assert m.process.returncode == 0
    seen += capfd.readouterr().err
    assert "DEBUG" in seen and "debugged.txt" in seen
    assert env_secret() not in seen
    assert body(s3, bucket, "debugged.txt") == b"x"


def test_library_bad_bucket_raises_start_error(s3_server, tmp_path, cleanup):
    mp = cleanup(str(tmp_path / "lib"))
    os.mkdir(mp)
    with (
        pytest.raises(StartError) as info,
        pys3fs.mount("no-such-bucket-lib", mp, library_options(s3_server, tmp_path)),
    ):
        pytest.fail("mounted a bucket that does not exist")
    message = str(info.value)
    assert "no-such-bucket-lib" in message and "not found" in message
    assert "\n" not in message and env_secret() not in message
    assert not is_mounted(mp)
    assert daemon_pids(mp) == []


# -- allow_other, default_permissions and other local users ---------------------------------
@pytest.fixture
def public_dir():
    """A directory any local user can traverse (pytest's tmp dirs are private to root)."""
    path = tempfile.mkdtemp(prefix="pys3fs-perm-", dir="/tmp")
    os.chmod(path, 0o755)
    yield path
    entries = [os.path.join(path, entry) for entry in os.listdir(path)]
    for entry in entries:
        force_unmount(entry)
    if not any(is_mounted(entry) for entry in entries):  # never rmtree through a mount
        shutil.rmtree(path, ignore_errors=True)


def as_nobody(*cmd: str) -> subprocess.CompletedProcess:
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to user nobody")
    return subprocess.run(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *cmd],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": SHELL_DEFAULT_PATH, "LANG": "C"},
    )


def make_private_and_public_files(fs) -> None:
    with open(fs.path("public.txt"), "w") as f:
        f.write("for everyone\n")
    os.chmod(fs.path("public.txt"), 0o644)
    with open(fs.path("secret.txt"), "w") as f:
        f.write("root only\n")
    os.chmod(fs.path("secret.txt"), 0o600)
    os.mkdir(fs.path("private"))
    os.chmod(fs.path("private"), 0o700)
    with open(fs.path("private", "inside.txt"), "w") as f:
        f.write("hidden\n")


def test_allow_other_enforces_permissions_for_other_users(mounter, s3, bucket, public_dir):
    fs = mounter(bucket, "allow_other", mountpoint=os.path.join(public_dir, "mnt"))
    assert {"allow_other", "default_permissions"} <= mount_options(fs.mountpoint)
    make_private_and_public_files(fs)

    readable = as_nobody("cat", fs.path("public.txt"))
    assert readable.returncode == 0, readable.stderr
    assert readable.stdout == "for everyone\n"

    denied = as_nobody("cat", fs.path("secret.txt"))
    assert denied.returncode != 0
    assert "Permission denied" in denied.stderr

    write = as_nobody("touch", fs.path("by-nobody.txt"))
    assert write.returncode != 0
    assert "Permission denied" in write.stderr

    listing = as_nobody("ls", fs.path("private"))
    assert listing.returncode != 0
    assert "Permission denied" in listing.stderr

    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]}
    assert "by-nobody.txt" not in keys
    # root, who mounted it, still reads everything
    with open(fs.path("secret.txt")) as f:
        assert f.read() == "root only\n"


def test_without_allow_other_other_users_are_locked_out(mounter, bucket, public_dir):
    fs = mounter(bucket, mountpoint=os.path.join(public_dir, "mnt"))
    make_private_and_public_files(fs)
    result = as_nobody("cat", fs.path("public.txt"))
    assert result.returncode != 0
    assert "Permission denied" in result.stderr
    with open(fs.path("public.txt")) as f:  # the mounting user is not affected
        assert f.read() == "for everyone\n"


def kernel_read_ahead(mountpoint: str) -> int:
    device = os.stat(mountpoint).st_dev
    with open(f"/sys/class/bdi/{os.major(device)}:{os.minor(device)}/read_ahead_kb") as f:
        return int(f.read())


@pytest.mark.parametrize("option, expected", [(None, 512), ("read_ahead_kb=1024", 1024)])
def test_the_kernel_reads_ahead_further_in_the_mount(mounter, bucket, option, expected):
    # a cold sequential read keeps more reads in flight than the kernel's 128 KiB allow
    mnt = mounter(bucket, *([option] if option else []))
    assert kernel_read_ahead(mnt.mountpoint) == expected


def test_read_ahead_kb_0_leaves_the_kernel_its_own(mounter, bucket):
    mnt = mounter(bucket, "read_ahead_kb=0")
    assert kernel_read_ahead(mnt.mountpoint) == 128
