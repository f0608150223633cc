"""Unit tests for pys3fs.credentials.

Every lookup is sandboxed (environ, home and etc_dir point into tmp_path) so the
machine's real ~/.aws/credentials, ~/.passwd-s3fs and /etc/passwd-s3fs are never read.
"""

import logging
from pathlib import Path

import pytest

import pys3fs.credentials as credentials_module
from pys3fs.credentials import (
    NOTHING_FOUND,
    Credentials,
    CredentialsError,
    resolve_credentials,
)

ACCESS = "AKIATESTACCESS"
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYzSecret"
TOKEN = "FwoGZXIvYXdzTokenValue"
OTHER_ACCESS = "AKIAOTHERACCESS"
OTHER_SECRET = "otherSecretKey/abc+def"
BUCKET = "mybucket"
SECRETS = (SECRET, OTHER_SECRET, TOKEN)


def write(path: Path, text: str, mode: int = 0o600) -> Path:
    """Create a credentials file with an exact mode (tmp files default to 0644)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


def assert_no_secret(text: str) -> None:
    """Fail when any secret or token shows up in user-visible text."""
    for secret in SECRETS:
        assert secret not in text


class Sandbox:
    """A fake HOME and /etc under tmp_path, plus helpers to call the resolver there."""

    def __init__(self, root: Path) -> None:
        self.home = root / "home"
        self.etc = root / "etc"
        self.home.mkdir()
        self.etc.mkdir()

    def resolve(self, **kwargs) -> Credentials | None:
        kwargs.setdefault("bucket", BUCKET)
        kwargs.setdefault("environ", {})
        return resolve_credentials(home=str(self.home), etc_dir=str(self.etc), **kwargs)

    def error(self, **kwargs) -> str:
        """Expect a CredentialsError; check it leaks nothing and return its message."""
        with pytest.raises(CredentialsError) as info:
            self.resolve(**kwargs)
        message = str(info.value)
        assert_no_secret(message)
        assert_no_secret(repr(info.value))
        assert "\n" not in message
        return message

    def aws_file(self, text: str, path: Path | None = None) -> Path:
        return write(path or self.home / ".aws" / "credentials", text, 0o644)


@pytest.fixture
def box(tmp_path: Path) -> Sandbox:
    return Sandbox(tmp_path)


def keys(creds: Credentials | None) -> tuple[str, str, str | None]:
    assert creds is not None
    return creds.access_key, creds.secret_key, creds.session_token


# --- Credentials object ----------------------------------------------------------------


def test_repr_and_str_hide_secret_and_token() -> None:
    creds = Credentials(ACCESS, SECRET, TOKEN, source="environment")
    for text in (repr(creds), str(creds), f"{creds}", f"{creds!r}"):
        assert_no_secret(text)
        assert ACCESS in text
        assert "environment" in text


def test_credentials_are_immutable() -> None:
    creds = Credentials(ACCESS, SECRET)
    with pytest.raises(AttributeError):
        creds.secret_key = "x"  # type: ignore[misc]


# --- -o passwd_file ----------------------------------------------------------------------


def test_passwd_option_default_line(box: Sandbox) -> None:
    path = write(box.home / "creds", f"{ACCESS}:{SECRET}\n")
    creds = box.resolve(passwd_file=str(path))
    assert keys(creds) == (ACCESS, SECRET, None)
    assert creds is not None and creds.source == f"passwd_file {path}"


def test_bucket_line_beats_default_line_in_any_order(box: Sandbox) -> None:
    text = f"{OTHER_ACCESS}:{OTHER_SECRET}\n{BUCKET}:{ACCESS}:{SECRET}\n"
    path = write(box.home / "creds", text)
    assert keys(box.resolve(passwd_file=str(path))) == (ACCESS, SECRET, None)


def test_other_bucket_line_falls_back_to_default(box: Sandbox) -> None:
    text = f"otherbucket:{OTHER_ACCESS}:{OTHER_SECRET}\n{ACCESS}:{SECRET}\n"
    path = write(box.home / "creds", text)
    assert keys(box.resolve(passwd_file=str(path))) == (ACCESS, SECRET, None)


def test_comments_blank_lines_whitespace_crlf_and_bom(box: Sandbox) -> None:
    text = f"\ufeff# my keys\r\n\r\n   \r\n  # indented comment\r\n  {ACCESS} : {SECRET}  \r\n"
    path = box.home / "creds"
    path.write_bytes(text.encode("utf-8"))
    path.chmod(0o600)
    assert keys(box.resolve(passwd_file=str(path))) == (ACCESS, SECRET, None)


def test_key_value_form_with_session_token(box: Sandbox) -> None:
    text = (
        f"# s3fs style\nAWSAccessKeyId={ACCESS}\nAWSSecretKey = {SECRET}\nAWSSessionToken={TOKEN}\n"
    )
    path = write(box.home / "creds", text)
    assert keys(box.resolve(passwd_file=str(path))) == (ACCESS, SECRET, TOKEN)


def test_key_value_form_needs_both_keys(box: Sandbox) -> None:
    path = write(box.home / "creds", f"AWSSecretKey={SECRET}\n")
    message = box.error(passwd_file=str(path))
    assert str(path) in message
    assert "AWSAccessKeyId" in message


def test_bucket_line_beats_key_value_default(box: Sandbox) -> None:
    text = (
        f"AWSAccessKeyId={OTHER_ACCESS}\nAWSSecretKey={OTHER_SECRET}\n{BUCKET}:{ACCESS}:{SECRET}\n"
    )
    path = write(box.home / "creds", text)
    assert keys(box.resolve(passwd_file=str(path))) == (ACCESS, SECRET, None)


@pytest.mark.parametrize(
    "bad_line",
    [
        f"{ACCESS}{SECRET}",  # no colon
        f":{SECRET}",  # empty access key
        f"{ACCESS}:",  # empty secret
        f"{BUCKET}::{SECRET}",  # empty access key in bucket form
        f":{ACCESS}:{SECRET}",  # empty bucket
        f"a:b:{ACCESS}:{SECRET}",  # too many fields
        "AWSSecretKey=",  # empty key=value
        f"SomethingElse={SECRET}",  # unknown key=value
    ],
)
def test_malformed_line_names_file_and_number_not_content(box: Sandbox, bad_line: str) -> None:
    text = f"# header\n\n{OTHER_ACCESS}:{OTHER_SECRET}\n{bad_line}\n"
    path = write(box.home / "creds", text)
    message = box.error(passwd_file=str(path))
    assert str(path) in message
    assert "line 4" in message
    assert bad_line not in message


def test_passwd_option_missing_file(box: Sandbox) -> None:
    path = box.home / "nope"
    message = box.error(passwd_file=str(path))
    assert "does not exist" in message and str(path) in message


def test_passwd_option_directory_refused(box: Sandbox) -> None:
    (box.home / "adir").mkdir(mode=0o700)
    assert "not a regular file" in box.error(passwd_file=str(box.home / "adir"))


def test_passwd_option_unreadable(box: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests may run as root, where chmod 000 does not stop reads: simulate EACCES instead.
    path = write(box.home / "creds", f"{ACCESS}:{SECRET}\n", 0o400)

    def deny(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(credentials_module, "open", deny, raising=False)
    message = box.error(passwd_file=str(path))
    assert "cannot read" in message and "Permission denied" in message


def test_passwd_option_without_matching_entry(box: Sandbox) -> None:
    path = write(box.home / "creds", f"# nothing\notherbucket:{ACCESS}:{SECRET}\n")
    message = box.error(passwd_file=str(path))
    assert "no entry for bucket 'mybucket'" in message


def test_passwd_option_is_the_only_source_tried(box: Sandbox) -> None:
    environ = {"AWS_ACCESS_KEY_ID": OTHER_ACCESS, "AWS_SECRET_ACCESS_KEY": OTHER_SECRET}
    write(box.home / ".passwd-s3fs", f"{OTHER_ACCESS}:{OTHER_SECRET}\n")
    path = write(box.home / "creds", f"otherbucket:{ACCESS}:{SECRET}\n")
    box.error(passwd_file=str(path), environ=environ)
    good = write(box.home / "good", f"{ACCESS}:{SECRET}\n")
    assert keys(box.resolve(passwd_file=str(good), environ=environ)) == (ACCESS, SECRET, None)


def test_passwd_option_tilde_expands_to_home(box: Sandbox) -> None:
    write(box.home / "creds", f"{ACCESS}:{SECRET}\n")
    assert keys(box.resolve(passwd_file="~/creds")) == (ACCESS, SECRET, None)


@pytest.mark.parametrize("mode", [0o604, 0o602, 0o601, 0o644, 0o666])
def test_passwd_option_refused_when_others_have_access(box: Sandbox, mode: int) -> None:
    path = write(box.home / "creds", f"{ACCESS}:{SECRET}\n", mode)
    message = box.error(passwd_file=str(path))
    assert "accessible by others" in message
    assert f"chmod 600 {path}" in message


@pytest.mark.parametrize("mode", [0o640, 0o620, 0o610])
def test_passwd_option_refused_with_group_bits(box: Sandbox, mode: int) -> None:
    path = write(box.home / "creds", f"{ACCESS}:{SECRET}\n", mode)
    message = box.error(passwd_file=str(path))
    assert "accessible by its group" in message
    assert f"chmod 600 {path}" in message


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_passwd_option_private_modes_accepted(box: Sandbox, mode: int) -> None:
    path = write(box.home / "creds", f"{ACCESS}:{SECRET}\n", mode)
    assert keys(box.resolve(passwd_file=str(path))) == (ACCESS, SECRET, None)


def test_passwd_option_pointing_at_etc_file_allows_group_read(box: Sandbox) -> None:
    path = write(box.etc / "passwd-s3fs", f"{ACCESS}:{SECRET}\n", 0o640)
    assert keys(box.resolve(passwd_file=str(path))) == (ACCESS, SECRET, None)


# --- environment ---------------------------------------------------------------------


def test_environment_keys_with_session_token(box: Sandbox) -> None:
    environ = {
        "AWS_ACCESS_KEY_ID": ACCESS,
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_SESSION_TOKEN": TOKEN,
    }
    creds = box.resolve(environ=environ)
    assert keys(creds) == (ACCESS, SECRET, TOKEN)
    assert creds is not None and creds.source.startswith("environment")


def test_s3fs_environment_names(box: Sandbox) -> None:
    environ = {"AWSACCESSKEYID": ACCESS, "AWSSECRETACCESSKEY": SECRET, "AWSSESSIONTOKEN": TOKEN}
    assert keys(box.resolve(environ=environ)) == (ACCESS, SECRET, TOKEN)


def test_aws_environment_names_beat_s3fs_names(box: Sandbox) -> None:
    environ = {
        "AWS_ACCESS_KEY_ID": ACCESS,
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWSACCESSKEYID": OTHER_ACCESS,
        "AWSSECRETACCESSKEY": OTHER_SECRET,
    }
    assert keys(box.resolve(environ=environ)) == (ACCESS, SECRET, None)


def test_environment_beats_aws_file_and_passwd_files(box: Sandbox) -> None:
    box.aws_file(
        f"[default]\naws_access_key_id={OTHER_ACCESS}\naws_secret_access_key={OTHER_SECRET}\n"
    )
    write(box.home / ".passwd-s3fs", f"{OTHER_ACCESS}:{OTHER_SECRET}\n")
    environ = {"AWS_ACCESS_KEY_ID": ACCESS, "AWS_SECRET_ACCESS_KEY": SECRET}
    assert keys(box.resolve(environ=environ)) == (ACCESS, SECRET, None)


@pytest.mark.parametrize(
    "environ",
    [
        {"AWS_ACCESS_KEY_ID": ACCESS},
        {"AWS_SECRET_ACCESS_KEY": SECRET},
        {"AWSSECRETACCESSKEY": SECRET},
    ],
)
def test_half_environment_pair_is_an_error(box: Sandbox, environ: dict[str, str]) -> None:
    assert "must be set together" in box.error(environ=environ)


def test_empty_environment_values_count_as_unset(box: Sandbox) -> None:
    write(box.home / ".passwd-s3fs", f"{ACCESS}:{SECRET}\n")
    environ = {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""}
    assert keys(box.resolve(environ=environ)) == (ACCESS, SECRET, None)


def test_explicit_profile_skips_environment(box: Sandbox) -> None:
    box.aws_file(f"[work]\naws_access_key_id={ACCESS}\naws_secret_access_key={SECRET}\n")
    environ = {"AWS_ACCESS_KEY_ID": OTHER_ACCESS, "AWS_SECRET_ACCESS_KEY": OTHER_SECRET}
    assert keys(box.resolve(profile="work", environ=environ)) == (ACCESS, SECRET, None)


# --- ~/.aws/credentials ----------------------------------------------------------------


AWS_FILE = f"""\
[default]
aws_access_key_id = {ACCESS}
aws_secret_access_key = {SECRET}

[other]
aws_access_key_id = {OTHER_ACCESS}
aws_secret_access_key = {OTHER_SECRET}
aws_session_token = {TOKEN}
"""


def test_aws_default_profile(box: Sandbox) -> None:
    path = box.aws_file(AWS_FILE)
    creds = box.resolve()
    assert keys(creds) == (ACCESS, SECRET, None)
    assert creds is not None and creds.source == f"{path} [default]"


def test_aws_profile_from_environment_with_session_token(box: Sandbox) -> None:
    box.aws_file(AWS_FILE)
    creds = box.resolve(environ={"AWS_PROFILE": "other"})
    assert keys(creds) == (OTHER_ACCESS, OTHER_SECRET, TOKEN)


def test_explicit_profile_beats_aws_profile_env(box: Sandbox) -> None:
    box.aws_file(AWS_FILE)
    creds = box.resolve(profile="default", environ={"AWS_PROFILE": "other"})
    assert keys(creds) == (ACCESS, SECRET, None)


def test_shared_credentials_file_env_override(box: Sandbox, tmp_path: Path) -> None:
    path = box.aws_file(AWS_FILE, tmp_path / "elsewhere" / "creds")
    environ = {"AWS_SHARED_CREDENTIALS_FILE": str(path), "AWS_PROFILE": "other"}
    assert keys(box.resolve(environ=environ)) == (OTHER_ACCESS, OTHER_SECRET, TOKEN)


def test_aws_file_with_percent_in_secret(box: Sandbox) -> None:
    box.aws_file(f"[default]\naws_access_key_id={ACCESS}\naws_secret_access_key=ab%cd\n")
    assert keys(box.resolve()) == (ACCESS, "ab%cd", None)


def test_explicit_profile_missing_section(box: Sandbox) -> None:
    path = box.aws_file(AWS_FILE)
    write(box.home / ".passwd-s3fs", f"{ACCESS}:{SECRET}\n")
    message = box.error(profile="nope")
    assert message == f"profile 'nope' not found in {path}"


def test_explicit_profile_missing_file(box: Sandbox) -> None:
    assert "profile 'work' not found" in box.error(profile="work")


def test_explicit_profile_without_keys(box: Sandbox) -> None:
    box.aws_file("[work]\nregion = eu-west-1\n")
    assert "needs both aws_access_key_id" in box.error(profile="work")


def test_aws_profile_env_missing_falls_through_to_passwd_file(box: Sandbox) -> None:
    box.aws_file(AWS_FILE)
    write(box.home / ".passwd-s3fs", f"{OTHER_ACCESS}:{OTHER_SECRET}\n")
    creds = box.resolve(environ={"AWS_PROFILE": "nope"})
    assert keys(creds) == (OTHER_ACCESS, OTHER_SECRET, None)


def test_half_keys_in_profile_is_an_error(box: Sandbox) -> None:
    box.aws_file(f"[default]\naws_secret_access_key={SECRET}\n")
    assert "needs both" in box.error()


def test_aws_file_beats_passwd_files(box: Sandbox) -> None:
    box.aws_file(AWS_FILE)
    write(box.home / ".passwd-s3fs", f"{OTHER_ACCESS}:{OTHER_SECRET}\n")
    assert keys(box.resolve()) == (ACCESS, SECRET, None)


def test_unparsable_aws_file_reports_line_not_content(box: Sandbox) -> None:
    box.aws_file(f"aws_secret_access_key={SECRET}\n")  # no section header
    message = box.error()
    assert "line 1" in message


def test_aws_file_garbage_line_reports_line_not_content(box: Sandbox) -> None:
    box.aws_file(f"[default]\naws_access_key_id={ACCESS}\n{SECRET}\n")
    assert "line 3" in box.error()


# --- well-known passwd files -----------------------------------------------------------


def test_home_passwd_s3fs(box: Sandbox) -> None:
    path = write(box.home / ".passwd-s3fs", f"{ACCESS}:{SECRET}\n")
    creds = box.resolve()
    assert keys(creds) == (ACCESS, SECRET, None)
    assert creds is not None and str(path) in creds.source


def test_home_passwd_s3fs_beats_passwd_pys3fs_and_etc(box: Sandbox) -> None:
    write(box.home / ".passwd-s3fs", f"{ACCESS}:{SECRET}\n")
    write(box.home / ".passwd-pys3fs", f"{OTHER_ACCESS}:{OTHER_SECRET}\n")
    write(box.etc / "passwd-s3fs", f"{OTHER_ACCESS}:{OTHER_SECRET}\n")
    assert keys(box.resolve()) == (ACCESS, SECRET, None)


def test_home_passwd_pys3fs(box: Sandbox) -> None:
    write(box.home / ".passwd-pys3fs", f"{ACCESS}:{SECRET}\n")
    write(box.etc / "passwd-s3fs", f"{OTHER_ACCESS}:{OTHER_SECRET}\n")
    assert keys(box.resolve()) == (ACCESS, SECRET, None)


def test_file_without_matching_entry_is_skipped(box: Sandbox) -> None:
    write(box.home / ".passwd-s3fs", f"# all commented\n#{OTHER_ACCESS}:{OTHER_SECRET}\n")
    write(box.home / ".passwd-pys3fs", f"otherbucket:{OTHER_ACCESS}:{OTHER_SECRET}\n")
    write(box.etc / "passwd-s3fs", f"{BUCKET}:{ACCESS}:{SECRET}\n", 0o640)
    assert keys(box.resolve()) == (ACCESS, SECRET, None)


def test_etc_passwd_pys3fs_is_last(box: Sandbox) -> None:
    write(box.etc / "passwd-pys3fs", f"{ACCESS}:{SECRET}\n", 0o600)
    assert keys(box.resolve()) == (ACCESS, SECRET, None)


def test_etc_passwd_s3fs_beats_etc_passwd_pys3fs(box: Sandbox) -> None:
    write(box.etc / "passwd-s3fs", f"{ACCESS}:{SECRET}\n", 0o600)
    write(box.etc / "passwd-pys3fs", f"{OTHER_ACCESS}:{OTHER_SECRET}\n", 0o600)
    assert keys(box.resolve()) == (ACCESS, SECRET, None)


@pytest.mark.parametrize("name", [".passwd-s3fs", ".passwd-pys3fs"])
@pytest.mark.parametrize("mode", [0o640, 0o620, 0o610, 0o604])
def test_home_file_with_group_or_other_bits_refused(box: Sandbox, name: str, mode: int) -> None:
    path = write(box.home / name, f"{ACCESS}:{SECRET}\n", mode)
    message = box.error()
    assert str(path) in message
    assert f"chmod 600 {path}" in message


@pytest.mark.parametrize("name", ["passwd-s3fs", "passwd-pys3fs"])
def test_etc_file_group_read_accepted(box: Sandbox, name: str) -> None:
    write(box.etc / name, f"{ACCESS}:{SECRET}\n", 0o640)
    assert keys(box.resolve()) == (ACCESS, SECRET, None)


@pytest.mark.parametrize("name", ["passwd-s3fs", "passwd-pys3fs"])
def test_etc_file_group_writable_refused(box: Sandbox, name: str) -> None:
    path = write(box.etc / name, f"{ACCESS}:{SECRET}\n", 0o660)
    message = box.error()
    assert "group-writable" in message
    assert f"chmod 640 {path}" in message


@pytest.mark.parametrize("mode", [0o644, 0o642, 0o641])
def test_etc_file_others_refused(box: Sandbox, mode: int) -> None:
    path = write(box.etc / "passwd-s3fs", f"{ACCESS}:{SECRET}\n", mode)
    message = box.error()
    assert "accessible by others" in message
    assert f"chmod 640 {path}" in message


def test_bad_permissions_refused_even_without_matching_entry(box: Sandbox) -> None:
    write(box.home / ".passwd-s3fs", f"otherbucket:{ACCESS}:{SECRET}\n", 0o644)
    assert "accessible by others" in box.error()


def test_malformed_found_file_is_an_error(box: Sandbox) -> None:
    path = write(box.home / ".passwd-s3fs", f"{ACCESS}{SECRET}\n")
    message = box.error()
    assert f"passwd file {path} line 1" in message


# --- iam_role / public_bucket / nothing ------------------------------------------------


@pytest.mark.parametrize(
    "options", [{"iam_role": "auto"}, {"iam_role": "my-role"}, {"iam_role": ""}]
)
def test_iam_role_returns_none(box: Sandbox, options: dict[str, str]) -> None:
    assert box.resolve(**options) is None


def test_public_bucket_returns_none(box: Sandbox) -> None:
    assert box.resolve(public_bucket=True) is None


def test_iam_role_and_public_bucket_skip_key_files(box: Sandbox) -> None:
    # Like s3fs-fuse: the user chose role/anonymous access, so a stray (even unsafe)
    # passwd file or environment keys must not override or block that choice.
    write(box.home / ".passwd-s3fs", f"{ACCESS}:{SECRET}\n", 0o644)
    environ = {"AWS_ACCESS_KEY_ID": ACCESS, "AWS_SECRET_ACCESS_KEY": SECRET}
    assert box.resolve(iam_role="auto", environ=environ) is None
    assert box.resolve(public_bucket=True, passwd_file="/nonexistent") is None


def test_nothing_found(box: Sandbox) -> None:
    assert box.error() == NOTHING_FOUND
    assert NOTHING_FOUND.startswith("no credentials found: use -o passwd_file=FILE")


def test_home_defaults_to_environ_home(box: Sandbox) -> None:
    write(box.home / ".passwd-s3fs", f"{ACCESS}:{SECRET}\n")
    creds = resolve_credentials(BUCKET, environ={"HOME": str(box.home)}, etc_dir=str(box.etc))
    assert keys(creds) == (ACCESS, SECRET, None)


# --- no secret in logs -----------------------------------------------------------------


def test_debug_logs_never_contain_secrets(box: Sandbox, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="pys3fs.credentials")
    environ = {
        "AWS_ACCESS_KEY_ID": ACCESS,
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_SESSION_TOKEN": TOKEN,
    }
    box.resolve(environ=environ)
    write(box.home / ".passwd-s3fs", f"{ACCESS}:{SECRET}\n")
    box.resolve()
    box.resolve(iam_role="auto")
    assert caplog.records
    assert_no_secret(caplog.text)
