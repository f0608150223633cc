"""The ``pys3fs`` command line, run as a user runs it: a real process, real mounts, moto.

Every fail-fast error must be one ``pys3fs:`` line on stderr with a non-zero status, leave
nothing mounted and no daemon behind, and never show the secret key. Success paths return
0 only once the mount is live, and the options users put on the line take effect.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess

import pytest
from conftest import (
    PYS3FS,
    S3Server,
    daemon_pids,
    force_unmount,
    free_port,
    is_mounted,
    mount_options,
    start_moto,
)

AUTH_BUCKET = "auth-bucket"
WRONG_SECRET = "wrong-secret-must-not-be-printed"
CRED_VARS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWSACCESSKEYID",
    "AWSSECRETACCESSKEY",
    "AWSSESSIONTOKEN",
    "AWS_PROFILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CONFIG_FILE",
)


def env_secret() -> str:
    """The secret key the tests hand pys3fs (isolated_env puts the server's in the env)."""
    return os.environ["AWS_SECRET_ACCESS_KEY"]


def env_without_keys(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CRED_VARS}
    env.update(extra)
    return env


def write_private(path, text: str, mode: int = 0o600) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return str(path)


@pytest.fixture
def cli(request, s3_server, tmp_path):
    """Run ``pys3fs ARGS`` as a user would; whatever it mounts is unmounted afterwards."""
    mountpoints: list[str] = []

    def run(*args: str, env=None, timeout: float = 90) -> subprocess.CompletedProcess:
        mountpoints.extend(os.path.abspath(a) for a in args if a.startswith(str(tmp_path)))
        return subprocess.run(
            [PYS3FS, *args], capture_output=True, text=True, timeout=timeout, env=env
        )

    yield run
    for mp in mountpoints:
        force_unmount(mp)


@pytest.fixture
def mp(tmp_path) -> str:
    path = tmp_path / "mnt"
    path.mkdir()
    return str(path)


def base_opts(server: S3Server, tmp_path, *extra: str) -> str:
    cache = tmp_path / "cache"
    return ",".join([f"url={server.url}", "use_path_request_style", f"use_cache={cache}", *extra])


def assert_failed(
    result: subprocess.CompletedProcess, mountpoint: str, *fragments: str, secrets=()
) -> str:
    """The fail-fast contract: status, exactly one line, nothing left behind, no secret."""
    assert result.returncode != 0, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("pys3fs:"), line
    for fragment in fragments:
        assert fragment in line
    for secret in (env_secret(), *secrets):
        assert secret not in result.stderr
        assert secret not in result.stdout
    assert not is_mounted(mountpoint)
    assert daemon_pids(mountpoint) == []
    return line


# -- fail-fast errors -----------------------------------------------------------------------
def test_missing_mountpoint(cli, s3_server, bucket, tmp_path):
    missing = str(tmp_path / "nope")
    result = cli(bucket, missing, "-o", base_opts(s3_server, tmp_path))
    assert_failed(result, missing, missing, "does not exist")


def test_mountpoint_is_a_regular_file(cli, s3_server, bucket, tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    result = cli(bucket, str(target), "-o", base_opts(s3_server, tmp_path))
    assert_failed(result, str(target), "not a directory")


def test_bucket_not_found(cli, s3_server, mp, tmp_path):
    result = cli("no-such-bucket-here", mp, "-o", base_opts(s3_server, tmp_path))
    assert_failed(result, mp, "'no-such-bucket-here'", "not found")


def test_prefix_not_found(cli, s3_server, s3, bucket, mp, tmp_path):
    s3.put_object(Bucket=bucket, Key="yes/file", Body=b"x")
    result = cli(f"{bucket}:/nope", mp, "-o", base_opts(s3_server, tmp_path))
    assert_failed(result, mp, "prefix /nope not found", bucket)


def test_prefix_that_exists_mounts(cli, s3_server, s3, bucket, mp, tmp_path):
    s3.put_object(Bucket=bucket, Key="yes/file", Body=b"x")
    result = cli(f"{bucket}:/yes", mp, "-o", base_opts(s3_server, tmp_path))
    assert result.returncode == 0, result.stderr
    assert os.listdir(mp) == ["file"]


def test_credentials_missing(cli, s3_server, bucket, mp, tmp_path):
    for name in ("passwd-s3fs", "passwd-pys3fs"):
        if os.path.exists(os.path.join("/etc", name)):
            pytest.skip(f"/etc/{name} exists on this machine")
    home = tmp_path / "emptyhome"
    home.mkdir()
    env = env_without_keys(HOME=str(home))
    result = cli(bucket, mp, "-o", base_opts(s3_server, tmp_path), env=env)
    line = assert_failed(result, mp, "no credentials found")
    assert "passwd_file" in line  # says where keys can come from


def test_endpoint_unreachable_fails_fast(cli, bucket, mp, tmp_path):
    closed = S3Server(url=f"http://127.0.0.1:{free_port()}")
    result = cli(bucket, mp, "-o", base_opts(closed, tmp_path), timeout=60)
    assert_failed(result, mp, "cannot reach", closed.url)


def test_unknown_option(cli, s3_server, bucket, mp, tmp_path):
    result = cli(bucket, mp, "-o", base_opts(s3_server, tmp_path, "bogus"))
    assert result.returncode == 2
    assert_failed(result, mp, "unknown option 'bogus'")


def test_an_s3fs_fuse_fstab_line_mounts_as_it_is(cli, s3_server, bucket, mp, tmp_path):
    # options an s3fs-fuse fstab line carries whose effect pys3fs has anyway
    logfile = tmp_path / "pys3fs.log"
    s3fs_line = "enable_noobj_cache,complement_stat,default_acl=private,multireq_max=20"
    result = cli(bucket, mp, "-o", base_opts(s3_server, tmp_path, s3fs_line, f"logfile={logfile}"))
    assert result.returncode == 0, result.stderr
    with open(os.path.join(mp, "f"), "w") as f:
        f.write("x")
    assert os.listdir(mp) == ["f"]
    force_unmount(mp)
    text = logfile.read_text()
    assert "s3fs-fuse option enable_noobj_cache: nothing to do" in text
    assert "s3fs-fuse option multireq_max: nothing to do" in text


def test_an_s3fs_fuse_option_pys3fs_cannot_honour_is_refused(cli, s3_server, bucket, mp, tmp_path):
    result = cli(bucket, mp, "-o", base_opts(s3_server, tmp_path, "nocopyapi"))
    assert_failed(result, mp, "s3fs-fuse option nocopyapi is not supported")


@pytest.mark.parametrize(
    "option, name",
    [
        ("uid=abc", "uid"),
        ("umask=99", "umask"),
        ("multipart_size=1", "multipart_size"),
        ("url=ftp://x", "url"),
    ],
)
def test_malformed_option(cli, s3_server, bucket, mp, tmp_path, option, name):
    result = cli(bucket, mp, "-o", base_opts(s3_server, tmp_path, option))
    assert_failed(result, mp, f"option {name}")


def test_bad_argument_is_one_line_not_a_usage_block(cli, mp):
    result = cli(mp)  # no bucket
    assert_failed(result, mp, "required")


def test_non_empty_mountpoint_is_refused_without_nonempty(cli, s3_server, bucket, mp, tmp_path):
    with open(os.path.join(mp, "local-file"), "w") as f:
        f.write("x")
    result = cli(bucket, mp, "-o", base_opts(s3_server, tmp_path))
    assert_failed(result, mp, "not empty")
    result = cli(bucket, mp, "-o", base_opts(s3_server, tmp_path, "nonempty"))
    assert result.returncode == 0, result.stderr
    assert is_mounted(mp)
    assert "local-file" not in os.listdir(mp)


def test_unusable_cache_directory(cli, s3_server, bucket, mp, tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the cache directory should go")
    opts = f"url={s3_server.url},use_path_request_style,use_cache={blocker}/sub"
    result = cli(bucket, mp, "-o", opts)
    assert_failed(result, mp, "cache directory")


# -- credentials against a server that checks them ------------------------------------------
# moto enforces IAM auth once INITIAL_NO_AUTH_ACTION_COUNT requests have been served; the
# four IAM calls below (user, key, policy, attachment) are the unauthenticated ones.
NO_AUTH_REQUESTS = 4


@pytest.fixture(scope="module")
def auth_server():
    server = start_moto({"INITIAL_NO_AUTH_ACTION_COUNT": str(NO_AUTH_REQUESTS)})
    try:
        iam = S3Server(url=server.url, access_key="bootstrap", secret_key="bootstrap")
        iam_client = iam.client("iam")
        iam_client.create_user(UserName="mounter")
        key = iam_client.create_access_key(UserName="mounter")["AccessKey"]
        policy = iam_client.create_policy(
            PolicyName="admin",
            PolicyDocument=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
                }
            ),
        )
        iam_client.attach_user_policy(UserName="mounter", PolicyArn=policy["Policy"]["Arn"])
        good = S3Server(
            url=server.url,
            access_key=key["AccessKeyId"],
            secret_key=key["SecretAccessKey"],
            proc=server.proc,
        )
        good.client().create_bucket(Bucket=AUTH_BUCKET)
        yield good
    finally:
        server.stop()


def test_auth_server_really_checks_keys(auth_server):
    """Guards the tests below: without this they would pass against any server."""
    bad = S3Server(url=auth_server.url, access_key=auth_server.access_key, secret_key="nope")
    with pytest.raises(Exception, match="SignatureDoesNotMatch"):
        bad.client().list_objects_v2(Bucket=AUTH_BUCKET)


@pytest.mark.parametrize("which", ["unknown access key", "wrong secret"])
def test_credentials_rejected(cli, auth_server, mp, tmp_path, which):
    access = "AKIAUNKNOWNKEY000000" if which == "unknown access key" else auth_server.access_key
    env = env_without_keys(AWS_ACCESS_KEY_ID=access, AWS_SECRET_ACCESS_KEY=WRONG_SECRET)
    result = cli(AUTH_BUCKET, mp, "-o", base_opts(auth_server, tmp_path), env=env)
    assert_failed(
        result,
        mp,
        "credentials rejected",
        secrets=(WRONG_SECRET, auth_server.secret_key),
    )


def check_mount_works(fs, server: S3Server, name: str) -> None:
    """Write through the mount; the object must reach the server."""
    with open(fs.path(name), "wb") as f:
        f.write(b"through the mount")
    body = server.client().get_object(Bucket=AUTH_BUCKET, Key=name)["Body"].read()
    assert body == b"through the mount"


def test_passwd_file_option(mounter, auth_server, tmp_path):
    passwd = write_private(
        tmp_path / "keys" / "passwd",
        f"AKIAWRONGDEFAULT:{WRONG_SECRET}\n"
        f"{AUTH_BUCKET}:{auth_server.access_key}:{auth_server.secret_key}\n",
    )
    fs = mounter(AUTH_BUCKET, f"passwd_file={passwd}", server=auth_server, env=env_without_keys())
    check_mount_works(fs, auth_server, "via-passwd-file")


def test_passwd_s3fs_in_home(mounter, auth_server, tmp_path):
    home = tmp_path / "home"
    write_private(home / ".passwd-s3fs", f"{auth_server.access_key}:{auth_server.secret_key}\n")
    fs = mounter(AUTH_BUCKET, server=auth_server, env=env_without_keys(HOME=str(home)))
    check_mount_works(fs, auth_server, "via-home-passwd")


def test_aws_credentials_profile(mounter, auth_server, tmp_path):
    home = tmp_path / "home"
    write_private(
        home / ".aws" / "credentials",
        "[default]\n"
        "aws_access_key_id = AKIAWRONGDEFAULT\n"
        f"aws_secret_access_key = {WRONG_SECRET}\n"
        "[work]\n"
        f"aws_access_key_id = {auth_server.access_key}\n"
        f"aws_secret_access_key = {auth_server.secret_key}\n",
    )
    env = env_without_keys(HOME=str(home))
    fs = mounter(AUTH_BUCKET, "profile=work", server=auth_server, env=env)
    check_mount_works(fs, auth_server, "via-profile")


@pytest.mark.parametrize("where", ["passwd_file option", "home passwd-s3fs"])
def test_passwd_file_readable_by_others_is_refused(cli, auth_server, mp, tmp_path, where):
    home = tmp_path / "home"
    home.mkdir()
    line = f"{auth_server.access_key}:{auth_server.secret_key}\n"
    if where == "passwd_file option":
        path = write_private(tmp_path / "passwd", line, mode=0o644)
        opts = base_opts(auth_server, tmp_path, f"passwd_file={path}")
    else:
        path = write_private(home / ".passwd-s3fs", line, mode=0o644)
        opts = base_opts(auth_server, tmp_path)
    result = cli(AUTH_BUCKET, mp, "-o", opts, env=env_without_keys(HOME=str(home)))
    assert_failed(result, mp, path, "accessible by others", secrets=(auth_server.secret_key,))


# -- success paths --------------------------------------------------------------------------
def test_version(cli):
    result = cli("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("pys3fs ")


def test_help(cli):
    result = cli("--help")
    assert result.returncode == 0
    assert "usage: pys3fs BUCKET" in result.stdout
    assert result.stderr == ""


def test_background_mount_is_live_when_the_command_returns(mounter, s3, bucket):
    s3.put_object(Bucket=bucket, Key="already-there", Body=b"x")
    fs = mounter(bucket)  # returns as soon as the pys3fs command has exited 0
    assert os.listdir(fs.mountpoint) == ["already-there"]
    with open("/proc/self/mounts") as f:
        entries = [line.split() for line in f]
    assert [bucket, fs.mountpoint, "fuse.pys3fs"] in [e[:3] for e in entries]
    assert len(fs.pids) == 1  # the daemon outlived the command that started it


def test_mount_command_lists_bucket_and_type(mounter, run, bucket):
    fs = mounter(bucket)
    shown = run("mount").stdout.splitlines()
    assert any(line.startswith(f"{bucket} on {fs.mountpoint} type fuse.pys3fs") for line in shown)


def test_mount_words_are_accepted(mounter, bucket):
    fs = mounter(bucket, "_netdev,auto,noauto,user,nouser,users,nofail,defaults")
    with open(fs.path("f"), "w") as f:
        f.write("ok")
    with open(fs.path("f")) as f:
        assert f.read() == "ok"


def test_generic_fuse_options_reach_the_kernel(mounter, bucket):
    fs = mounter(bucket, "noatime,nosuid,nodev")
    assert {"noatime", "nosuid", "nodev"} <= mount_options(fs.mountpoint)


def test_allow_root(mounter, bucket):
    if os.geteuid() != 0:
        pytest.skip("allow_root needs user_allow_other in /etc/fuse.conf for other users")
    fs = mounter(bucket, "allow_root")
    assert "allow_other" in mount_options(fs.mountpoint)  # libfuse filters root itself
    assert os.listdir(fs.mountpoint) == []


def open_and_close(path: str, mode: str) -> None:
    with open(path, mode):
        pass


def test_read_only_mount(mounter, s3, bucket):
    s3.put_object(Bucket=bucket, Key="a.txt", Body=b"readable")
    fs = mounter(bucket, "ro")
    assert "ro" in mount_options(fs.mountpoint)
    with open(fs.path("a.txt"), "rb") as f:
        assert f.read() == b"readable"
    attempts = [
        lambda: open_and_close(fs.path("new.txt"), "w"),
        lambda: open_and_close(fs.path("a.txt"), "r+b"),
        lambda: os.mkdir(fs.path("d")),
        lambda: os.remove(fs.path("a.txt")),
        lambda: os.rename(fs.path("a.txt"), fs.path("b.txt")),
        lambda: os.utime(fs.path("a.txt")),
    ]
    for attempt in attempts:
        with pytest.raises(OSError) as info:
            attempt()
        assert info.value.errno == errno.EROFS
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert keys == ["a.txt"]
    assert s3.get_object(Bucket=bucket, Key="a.txt")["Body"].read() == b"readable"


@pytest.mark.parametrize(
    "option, expected",
    [("storage_class=STANDARD_IA", "STANDARD_IA"), ("use_rrs", "REDUCED_REDUNDANCY")],
)
def test_storage_class_of_written_objects(mounter, s3, bucket, option, expected):
    fs = mounter(bucket, option)
    with open(fs.path("f.bin"), "wb") as f:
        f.write(b"x" * 100)
    assert s3.head_object(Bucket=bucket, Key="f.bin")["StorageClass"] == expected
    os.rename(fs.path("f.bin"), fs.path("g.bin"))  # a server-side copy keeps the class
    assert s3.head_object(Bucket=bucket, Key="g.bin")["StorageClass"] == expected


def test_tuning_options_are_accepted_and_multipart_size_is_used(mounter, s3, bucket):
    fs = mounter(bucket, "stat_cache_expire=1,multipart_size=5,retries=2,max_stat_cache_size=10")
    data = os.urandom(11 * 1024 * 1024)
    with open(fs.path("big.bin"), "wb") as f:
        f.write(data)
    head = s3.head_object(Bucket=bucket, Key="big.bin")
    assert head["ContentLength"] == len(data)
    assert head["ETag"].strip('"').endswith("-3")  # 5 + 5 + 1 MiB parts
    with open(fs.path("big.bin"), "rb") as f:
        assert f.read() == data


def test_debug_log_file_has_debug_lines_and_no_secret(cli, s3_server, bucket, mp, tmp_path):
    logfile = tmp_path / "pys3fs.log"
    result = cli(bucket, mp, "-d", "-o", base_opts(s3_server, tmp_path, f"logfile={logfile}"))
    assert result.returncode == 0, result.stderr
    assert env_secret() not in result.stderr + result.stdout
    pids = daemon_pids(mp)
    with open(os.path.join(mp, "hello.txt"), "w") as f:
        f.write("hi")
    assert os.listdir(mp) == ["hello.txt"]
    force_unmount(mp, pids)  # the daemon has exited: its log is complete
    text = logfile.read_text()
    debug_lines = [line for line in text.splitlines() if " DEBUG " in line]
    assert any("hello.txt" in line for line in debug_lines), text
    assert any("using credentials from environment" in line for line in debug_lines), text
    assert env_secret() not in text
