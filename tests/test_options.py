"""Unit tests for pys3fs.options: the ``-o`` names an s3fs-fuse user already writes.

Nothing here mounts anything: these pin down what each option turns into, and that
every malformed command line is refused with one line naming the culprit.
"""

import os
import tempfile

import pytest

from pys3fs.options import (
    FUSE_FLAGS,
    MOUNT_WORDS,
    S3FS_COVERED,
    S3FS_UNSUPPORTED,
    MiB,
    MountOptions,
    OptionError,
    build_options,
    parse_source,
    split_options,
)


def opts(*values: str, source: str = "bkt", mountpoint: str = "/mnt/x") -> MountOptions:
    return build_options(source, mountpoint, list(values))


def refused(*values: str, source: str = "bkt") -> str:
    """Expect an OptionError; return its message after checking it is one line."""
    with pytest.raises(OptionError) as info:
        opts(*values, source=source)
    message = str(info.value)
    assert message and "\n" not in message
    return message


# -- source and mountpoint ------------------------------------------------------------------
@pytest.mark.parametrize(
    "source, bucket, prefix",
    [
        ("bkt", "bkt", ""),
        ("bkt:/", "bkt", ""),
        ("bkt:/data", "bkt", "data/"),
        ("bkt:/data/2024/", "bkt", "data/2024/"),
        ("bkt://data//x", "bkt", "data/x/"),
        ("pys3fs#bkt", "bkt", ""),  # fstab's first form, if a helper passes it through
        ("s3fs#bkt:/p", "bkt", "p/"),
    ],
)
def test_source_splits_bucket_and_prefix(source, bucket, prefix):
    assert parse_source(source) == (bucket, prefix)
    built = opts(source=source)
    assert (built.bucket, built.prefix) == (bucket, prefix)


@pytest.mark.parametrize("source", ["", ":/p", "a/b", "pys3fs#", "pys3fs#:/x"])
def test_bad_source_is_refused(source):
    assert "bucket" in refused(source=source)


def test_mountpoint_is_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert build_options("bkt", "mnt", []).mountpoint == str(tmp_path / "mnt")


# -- splitting ------------------------------------------------------------------------------
def test_split_options_handles_repeats_blanks_and_values_with_equals():
    pairs = split_options(["a,b=1", " c = x=y ,,", "", "d="])
    assert pairs == [("a", None), ("b", "1"), ("c", " x=y"), ("d", "")]


def test_repeated_o_and_last_value_wins():
    built = opts("uid=1", "gid=2,uid=3")
    assert (built.uid, built.gid) == (3, 2)


# -- defaults -------------------------------------------------------------------------------
def test_defaults_match_the_documented_ones():
    built = opts()
    assert built.url is None and built.region is None
    assert built.use_path_request_style is False
    assert built.allow_other is False and built.read_only is False
    assert built.uid is None and built.gid is None and built.umask is None
    assert built.stat_cache_expire == 60.0
    assert built.multipart_size == 16 * MiB
    assert built.retries == 5
    assert built.fuse_options == {}
    assert built.resolved_cache_dir() == os.path.join(
        tempfile.gettempdir(), f"pys3fs-{os.getuid()}"
    )


# -- connection -----------------------------------------------------------------------------
def test_url_keeps_scheme_and_drops_trailing_slash():
    assert opts("url=http://127.0.0.1:9000/").url == "http://127.0.0.1:9000"
    assert opts("url=https://s3.example.com").endpoint_url == "https://s3.example.com"


@pytest.mark.parametrize("value", ["url=ftp://x", "url=127.0.0.1:9000", "url=", "url"])
def test_url_without_http_scheme_is_refused(value):
    assert "url" in refused(value)


def test_endpoint_is_the_signing_region_like_s3fs():
    assert opts("endpoint=eu-west-1").region == "eu-west-1"
    assert opts("region=us-west-2").region == "us-west-2"


@pytest.mark.parametrize(
    "value, expected",
    [
        ("use_path_request_style", True),
        ("use_path_request_style=1", True),
        ("use_path_request_style=true", True),
        ("use_path_request_style=0", False),
        ("use_path_request_style=no", False),
    ],
)
def test_boolean_flags(value, expected):
    assert opts(value).use_path_request_style is expected


def test_boolean_flag_with_junk_value_is_refused():
    assert "use_path_request_style" in refused("use_path_request_style=maybe")


def test_timeouts_and_retries():
    built = opts("connect_timeout=3.5,readwrite_timeout=20,retries=0")
    assert (built.connect_timeout, built.readwrite_timeout, built.retries) == (3.5, 20.0, 0)


@pytest.mark.parametrize(
    "value", ["connect_timeout=-1", "readwrite_timeout=x", "retries=-1", "retries=two"]
)
def test_bad_timeouts_and_retries_are_refused(value):
    assert value.split("=")[0] in refused(value)


# -- credentials ----------------------------------------------------------------------------
def test_credential_options():
    built = opts("passwd_file=/etc/keys,profile=work")
    assert (built.passwd_file, built.profile) == ("/etc/keys", "work")
    assert opts("iam_role").iam_role == "auto"
    assert opts("iam_role=myrole").iam_role == "myrole"
    assert opts("public_bucket=1").public_bucket is True


@pytest.mark.parametrize("value", ["passwd_file", "passwd_file=", "profile="])
def test_credential_options_need_a_value(value):
    assert "needs a value" in refused(value)


# -- ownership and permissions --------------------------------------------------------------
def test_uid_gid_decimal_umask_octal():
    built = opts("uid=1000,gid=100,umask=022,mp_umask=0027")
    assert (built.uid, built.gid) == (1000, 100)
    assert built.umask == 0o022
    assert built.mp_umask == 0o027


@pytest.mark.parametrize(
    "value", ["uid=abc", "uid=-1", "gid=1.5", "uid=", "umask=99", "umask=8", "mp_umask=x"]
)
def test_bad_ids_and_umasks_are_refused(value):
    assert value.split("=")[0] in refused(value)


def test_allow_other_and_ro():
    built = opts("allow_other,ro")
    assert built.allow_other is True and built.read_only is True
    assert opts("ro=0").read_only is False


# -- storage --------------------------------------------------------------------------------
def test_storage_class_is_case_insensitive():
    assert opts("storage_class=standard_ia").storage_class == "STANDARD_IA"


def test_unknown_storage_class_is_refused():
    assert "storage_class" in refused("storage_class=CHEAP")


def test_use_rrs_means_reduced_redundancy():
    assert opts("use_rrs").storage_class == "REDUCED_REDUNDANCY"
    assert opts("use_rrs=1").storage_class == "REDUCED_REDUNDANCY"
    assert opts("use_rrs=0").storage_class is None


def test_multipart_size_is_in_mib():
    assert opts("multipart_size=5").multipart_size == 5 * MiB
    assert opts("multipart_size=5120").multipart_size == 5120 * MiB


@pytest.mark.parametrize("value", ["multipart_size=1", "multipart_size=4", "multipart_size=5121"])
def test_multipart_size_outside_s3_limits_is_refused(value):
    assert "multipart_size" in refused(value)


def test_cache_and_thread_options():
    built = opts("use_cache=/var/cache/x,stat_cache_expire=1.5,max_stat_cache_size=10")
    assert built.resolved_cache_dir() == "/var/cache/x"
    assert built.stat_cache_expire == 1.5
    assert built.max_stat_cache_size == 10
    assert opts("max_thread_count=3").max_thread_count == 3
    assert opts("parallel_count=4").max_thread_count == 4


@pytest.mark.parametrize(
    "value",
    [
        "stat_cache_expire=-1",
        "stat_cache_expire=soon",
        "max_stat_cache_size=0",
        "max_thread_count=0",
        "parallel_count=x",
    ],
)
def test_bad_cache_and_thread_values_are_refused(value):
    assert value.split("=")[0] in refused(value)


@pytest.mark.parametrize("name", ["stat_cache_expire", "connect_timeout", "readwrite_timeout"])
def test_number_options_need_a_finite_value(name):
    assert "needs a value" in refused(name)
    assert "needs a value" in refused(f"{name}=")
    assert "invalid number" in refused(f"{name}=nan")
    assert "invalid number" in refused(f"{name}=inf")


# -- logging --------------------------------------------------------------------------------
def test_logging_options():
    assert opts("logfile=/var/log/p.log").logfile == "/var/log/p.log"
    assert opts("dbglevel=debug").debug is True
    assert opts("dbglevel=info").debug is False
    assert build_options("bkt", "/m", [], debug=True).debug is True


# -- mount(8) words and generic FUSE options ----------------------------------------------
def test_mount_words_are_accepted_and_ignored():
    built = opts(",".join(sorted(MOUNT_WORDS)))
    assert built.fuse_options == {}
    assert {"_netdev", "auto", "noauto", "user", "nouser", "users", "nofail", "defaults"} <= (
        MOUNT_WORDS
    )


def test_systemd_and_comment_options_are_ignored():
    built = opts("x-systemd.automount,x-systemd.idle-timeout=60,comment=systemd.automount")
    assert built.fuse_options == {}


def test_options_mount_fuse_adds_are_accepted():
    """mount.fuse adds rw,dev,suid (and user mounts nosuid,nodev,noexec) to the line."""
    built = opts("rw,dev,suid,nosuid,nodev,noexec")
    assert set(built.fuse_options) == {"rw", "dev", "suid", "nosuid", "nodev", "noexec"}


def test_fuse_flags_and_valued_options_are_passed_on():
    built = opts("noatime,allow_root,max_write=131072,fsname=data")
    assert built.fuse_options == {
        "noatime": True,
        "allow_root": True,
        "max_write": "131072",
        "fsname": "data",
    }
    assert "default_permissions" in FUSE_FLAGS


def test_fuse_flag_with_a_value_is_refused():
    assert "noatime" in refused("noatime=1")


def test_fuse_valued_option_without_a_value_is_refused():
    assert "max_write" in refused("max_write")


@pytest.mark.parametrize("value", ["bogus", "bogus=1", "use_caches=/x", "URL=http://x"])
def test_unknown_option_is_refused_by_name(value):
    message = refused(value)
    assert "unknown option" in message
    assert repr(value.split("=")[0]) in message


def test_first_bad_option_is_the_one_reported():
    message = refused("uid=abc,bogus")
    assert "uid" in message and "bogus" not in message


# -- s3fs-fuse options with nothing to do, or that cannot be honoured ------------------------
def test_s3fs_options_already_covered_are_accepted_and_named():
    built = opts("enable_noobj_cache,complement_stat,compat_dir,sigv4,multireq_max=20")
    assert built.covered == [
        "enable_noobj_cache",
        "complement_stat",
        "compat_dir",
        "sigv4",
        "multireq_max",
    ]
    assert built.fuse_options == {}
    assert set(built.covered) <= set(S3FS_COVERED)


@pytest.mark.parametrize("name", sorted(S3FS_UNSUPPORTED))
def test_s3fs_options_that_cannot_be_honoured_are_refused_by_name(name):
    message = refused(name)
    assert f"s3fs-fuse option {name} is not supported" in message
    assert "unknown" not in message


def test_default_acl_takes_s3fs_fuses_canned_acls():
    assert opts("default_acl=private").acl is None  # no header: S3's default, and the
    # only form a bucket with ACLs disabled takes
    assert opts("default_acl=public-read").acl == "public-read"
    assert opts("default_acl=Bucket-Owner-Full-Control").acl == "bucket-owner-full-control"
    assert opts().acl is None
    message = refused("default_acl=world-readable")
    assert "unknown canned ACL 'world-readable'" in message and "public-read" in message
    assert "needs a value" in refused("default_acl")


# Every option `s3fs --help` of s3fs-fuse 1.90 (Debian bookworm's) lists, with a value
# of the form it documents: an fstab line written for it never meets "unknown option".
S3FS_1_90_OPTIONS = [
    "bucket=bkt",
    "default_acl=private",
    "retries=3",
    "tmpdir=/var/tmp",
    "use_cache=/tmp/c",
    "check_cache_dir_exist",
    "del_cache",
    "storage_class=standard",
    "use_rrs",
    "use_sse",
    "load_sse_c=/k",
    "public_bucket=1",
    "passwd_file=/p",
    "ahbe_conf=/a",
    "profile=p",
    "connect_timeout=5",
    "readwrite_timeout=5",
    "list_object_max_keys=500",
    "max_stat_cache_size=10",
    "stat_cache_expire=5",
    "stat_cache_interval_expire=5",
    "enable_noobj_cache",
    "no_check_certificate",
    "ssl_verify_hostname=0",
    "nodnscache",
    "nosscache",
    "multireq_max=20",
    "parallel_count=5",
    "multipart_size=10",
    "multipart_copy_size=512",
    "max_dirty_data=5120",
    "ensure_diskfree=100",
    "multipart_threshold=25",
    "singlepart_copy_limit=512",
    "host=https://s3.example.com",
    "servicepath=/",
    "url=https://s3.example.com",
    "endpoint=us-east-1",
    "mp_umask=022",
    "umask=022",
    "nomultipart",
    "ecs",
    "iam_role=auto",
    "ibm_iam_auth",
    "ibm_iam_endpoint=https://iam.example.com",
    "use_xattr",
    "noxmlns",
    "nomixupload",
    "nocopyapi",
    "norenameapi",
    "use_path_request_style",
    "noua",
    "cipher_suites=AESGCM",
    "instance_name=i",
    "complement_stat",
    "notsup_compat_dir",
    "use_session_token",
    "requester_pays",
    "mime=/etc/mime.types",
    "logfile=/tmp/l",
    "dbglevel=info",
    "curldbg",
    "no_time_stamp_msg",
]


@pytest.mark.parametrize("option", S3FS_1_90_OPTIONS)
def test_every_s3fs_fuse_option_is_known(option):
    extra = ["no_check_certificate"] if option.startswith("ssl_verify_hostname") else []
    try:
        opts(option, *extra)
    except OptionError as exc:
        assert "unknown option" not in str(exc)
        assert option.partition("=")[0] in str(exc)


@pytest.mark.parametrize(
    "value, sse, key",
    [
        ("use_sse", "AES256", None),
        ("use_sse=1", "AES256", None),
        ("use_sse=AES256", "AES256", None),
        ("use_sse=kmsid", "aws:kms", None),
        ("use_sse=kmsid:alias/mine", "aws:kms", "alias/mine"),
        ("use_sse=k:1234abcd-12ab", "aws:kms", "1234abcd-12ab"),
        ("use_sse=0", None, None),
    ],
)
def test_use_sse_forms(value, sse, key):
    built = opts(value)
    assert (built.sse, built.sse_kms_key) == (sse, key)


@pytest.mark.parametrize("value", ["use_sse=custom", "use_sse=c:/etc/keys", "use_sse=rot13"])
def test_use_sse_forms_not_supported(value):
    assert "use_sse" in refused(value)


def test_certificate_and_host_name_checks():
    assert opts().check_certificate and opts().verify_hostname
    assert not opts("no_check_certificate").check_certificate
    assert opts("ssl_verify_hostname=2").verify_hostname
    built = opts("no_check_certificate", "ssl_verify_hostname=0")
    assert not built.check_certificate and not built.verify_hostname
    # boto3 cannot skip the name check alone: refused rather than silently weakened
    assert "needs no_check_certificate" in refused("ssl_verify_hostname=0")
    assert "ssl_verify_hostname" in refused("ssl_verify_hostname=yes")


def test_older_s3fs_names_for_the_endpoint():
    assert opts("host=https://s3.example.com").url == "https://s3.example.com"
    assert opts("servicepath=/").url is None
    assert "servicepath" in refused("servicepath=/api")
    assert "option host" in refused("host=s3.example.com")


def test_cache_placement_options():
    built = opts("tmpdir=/var/tmp")
    assert built.resolved_cache_dir() == f"/var/tmp/pys3fs-{os.getuid()}"
    assert opts("tmpdir=/var/tmp", "use_cache=/c").resolved_cache_dir() == "/c"
    assert opts("del_cache").del_cache and not opts().del_cache
    assert opts("check_cache_dir_exist").check_cache_dir_exist
    assert opts("mime=/etc/mime.types").mime_file == "/etc/mime.types"
    assert opts("stat_cache_interval_expire=7").stat_cache_expire == 7
