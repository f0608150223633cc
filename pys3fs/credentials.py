"""Find the keys used to sign S3 requests, the way s3fs-fuse users already expect.

People migrating from s3fs-fuse keep their ``-o passwd_file``, ``~/.passwd-s3fs``,
``/etc/passwd-s3fs`` and ``~/.aws/credentials`` files, so we look in the same places, in
the same order, and refuse the same unsafe file permissions.  Secrets are handled with
care: no error message, repr or log line ever contains a secret key or session token,
because those end up on terminals, in journald and in bug reports.
"""

import configparser
import logging
import os
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

# Per-user passwd files, relative to $HOME, in lookup order.
USER_PASSWD_NAMES = (".passwd-s3fs", ".passwd-pys3fs")
# System-wide passwd files, relative to /etc, in lookup order.
SYSTEM_PASSWD_NAMES = ("passwd-s3fs", "passwd-pys3fs")

NOTHING_FOUND = (
    "no credentials found: use -o passwd_file=FILE, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
    "~/.aws/credentials, ~/.passwd-s3fs or /etc/passwd-s3fs"
)

# Environment variable triples (access key, secret key, session token), preferred first.
# The second triple is s3fs-fuse's historical spelling.
_ENV_NAMES = (
    ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"),
    ("AWSACCESSKEYID", "AWSSECRETACCESSKEY", "AWSSESSIONTOKEN"),
)

# s3fs-fuse's alternative key=value passwd file form.
_KV_ACCESS = "AWSAccessKeyId"
_KV_SECRET = "AWSSecretKey"
_KV_TOKEN = "AWSSessionToken"
_KV_NAMES = frozenset((_KV_ACCESS, _KV_SECRET, _KV_TOKEN))

_OTHER_BITS = 0o007
_GROUP_BITS = 0o070
_GROUP_WRITE = 0o020


class CredentialsError(Exception):
    """One-line message safe to print on stderr: never contains a secret key."""


@dataclass(frozen=True)
class Credentials:
    """Explicit keys plus where they came from.

    The secret and token are excluded from repr (and so from str) so that logging or
    printing a Credentials object cannot leak them.
    """

    access_key: str
    secret_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)
    source: str = ""


def resolve_credentials(
    bucket: str,
    passwd_file: str | None = None,
    profile: str | None = None,
    iam_role: str | None = None,
    public_bucket: bool = False,
    environ: Mapping[str, str] | None = None,
    home: str | None = None,
    etc_dir: str = "/etc",
) -> Credentials | None:
    """Return explicit keys, or None meaning "let boto3's own chain (instance role) or
    unsigned access decide". Raise CredentialsError when nothing usable is found.

    Like s3fs-fuse, ``public_bucket`` and ``iam_role`` skip key loading entirely: the
    user asked for anonymous or role-based access, so a stray ``~/.passwd-s3fs`` (or a
    badly permissioned one) must neither override nor block that choice.
    """
    if public_bucket or iam_role is not None:
        log.debug("not loading keys: %s", "public_bucket" if public_bucket else "iam_role")
        return None
    environ = os.environ if environ is None else environ
    home = home or environ.get("HOME") or os.path.expanduser("~")
    creds = _lookup(bucket, passwd_file, profile, environ, home, etc_dir)
    if creds is None:
        raise CredentialsError(NOTHING_FOUND)
    log.debug("using credentials from %s", creds.source)
    return creds


def _lookup(
    bucket: str,
    passwd_file: str | None,
    profile: str | None,
    environ: Mapping[str, str],
    home: str,
    etc_dir: str,
) -> Credentials | None:
    """Walk the sources in s3fs-fuse's order; an explicit passwd_file is the only one tried."""
    if passwd_file:
        return _from_passwd_option(_expand_home(passwd_file, home), bucket, etc_dir)
    if not profile:  # an explicit profile means the user does not want the env keys
        creds = _from_environment(environ)
        if creds is not None:
            return creds
    creds = _from_aws_profile(profile, environ, home)
    if creds is not None:
        return creds
    return _from_default_passwd_files(bucket, home, etc_dir)


# --- environment -----------------------------------------------------------------------


def _from_environment(environ: Mapping[str, str]) -> Credentials | None:
    """Keys from AWS_* (or s3fs-fuse's AWSACCESSKEYID-style) variables; empty counts as unset."""
    for access_name, secret_name, token_name in _ENV_NAMES:
        access = environ.get(access_name, "").strip()
        secret = environ.get(secret_name, "").strip()
        if access and secret:
            token = environ.get(token_name, "").strip() or None
            return Credentials(access, secret, token, source=f"environment {access_name}")
        if access or secret:
            # Half a key pair is a configuration mistake, not "no credentials".
            raise CredentialsError(f"{access_name} and {secret_name} must be set together")
    return None


# --- ~/.aws/credentials ----------------------------------------------------------------


def _from_aws_profile(
    profile: str | None, environ: Mapping[str, str], home: str
) -> Credentials | None:
    """Keys from the AWS shared credentials file, as the aws CLI would pick them."""
    explicit = bool(profile)
    name = profile or environ.get("AWS_PROFILE") or "default"
    path = _shared_credentials_path(environ, home)
    section = _read_profile(path, name)
    if section is None:
        if explicit:
            raise CredentialsError(f"profile {name!r} not found in {path}")
        return None
    access = section.get("aws_access_key_id", "").strip()
    secret = section.get("aws_secret_access_key", "").strip()
    if access and secret:
        token = section.get("aws_session_token", "").strip() or None
        return Credentials(access, secret, token, source=f"{path} [{name}]")
    if access or secret or explicit:
        raise CredentialsError(
            f"profile {name!r} in {path} needs both aws_access_key_id and aws_secret_access_key"
        )
    return None


def _shared_credentials_path(environ: Mapping[str, str], home: str) -> str:
    """Honour AWS_SHARED_CREDENTIALS_FILE like boto3 does, so both tools agree."""
    override = environ.get("AWS_SHARED_CREDENTIALS_FILE")
    if override:
        return _expand_home(override, home)
    return os.path.join(home, ".aws", "credentials")


def _read_profile(path: str, name: str) -> Mapping[str, str] | None:
    """Return the profile's section, or None when the file or section does not exist."""
    if not os.path.isfile(path):
        return None
    # No interpolation: a '%' in a secret must not be treated as syntax.
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        parser.read_string(_read_text(path, "credentials file"), source=path)
    except configparser.Error as err:
        # configparser's own messages quote the offending line, which may hold a secret.
        raise CredentialsError(
            f"cannot parse credentials file {path}: syntax error at line {_error_line(err)}"
        ) from None
    if not parser.has_section(name):
        return None
    return parser[name]


def _error_line(err: configparser.Error) -> str:
    """Line number of a configparser error, without the line's text."""
    lineno = getattr(err, "lineno", None)
    if lineno is None and isinstance(err, configparser.ParsingError) and err.errors:
        lineno = err.errors[0][0]
    return str(lineno) if lineno is not None else "?"


# --- passwd files ----------------------------------------------------------------------


def _from_passwd_option(path: str, bucket: str, etc_dir: str) -> Credentials:
    """The user named this file, so anything short of a usable entry is an error."""
    st = _stat(path)
    if st is None:
        raise CredentialsError(f"passwd file {path} does not exist")
    _check_mode(path, st, system=_is_system_file(path, etc_dir))
    creds = _pick(_parse_passwd(path, f"passwd_file {path}"), bucket)
    if creds is None:
        raise CredentialsError(
            f"passwd file {path} has no entry for bucket {bucket!r} "
            "and no default ACCESS_KEY:SECRET line"
        )
    return creds


def _from_default_passwd_files(bucket: str, home: str, etc_dir: str) -> Credentials | None:
    """First well-known passwd file that exists and has an entry for this bucket wins."""
    for path, system in _default_passwd_files(home, etc_dir):
        st = _stat(path)
        if st is None:
            continue
        _check_mode(path, st, system=system)
        creds = _pick(_parse_passwd(path, f"passwd file {path}"), bucket)
        if creds is not None:
            return creds
    return None


def _default_passwd_files(home: str, etc_dir: str) -> Iterator[tuple[str, bool]]:
    """(path, is_system_file) in lookup order: per-user files first, then /etc."""
    for name in USER_PASSWD_NAMES:
        yield os.path.join(home, name), False
    for name in SYSTEM_PASSWD_NAMES:
        yield os.path.join(etc_dir, name), True


def _is_system_file(path: str, etc_dir: str) -> bool:
    """True when -o passwd_file points at /etc/passwd-s3fs, which may be 0640 root:group."""
    real = os.path.realpath(path)
    return any(real == os.path.realpath(os.path.join(etc_dir, n)) for n in SYSTEM_PASSWD_NAMES)


def _stat(path: str) -> os.stat_result | None:
    """stat() the file, None when it is absent; other failures are reported."""
    try:
        return os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as err:
        raise CredentialsError(f"cannot access passwd file {path}: {err.strerror}") from None


def _check_mode(path: str, st: os.stat_result, *, system: bool) -> None:
    """Refuse files other users could read or tamper with, as s3fs-fuse does."""
    if not stat.S_ISREG(st.st_mode):
        raise CredentialsError(f"passwd file {path} is not a regular file")
    mode = stat.S_IMODE(st.st_mode)
    fix = f"chmod {'640' if system else '600'} {path}"
    if mode & _OTHER_BITS:
        raise CredentialsError(
            f"passwd file {path} is accessible by others (mode {mode:04o}): {fix}"
        )
    if not system and mode & _GROUP_BITS:
        raise CredentialsError(
            f"passwd file {path} is accessible by its group (mode {mode:04o}): {fix}"
        )
    if system and mode & _GROUP_WRITE:
        raise CredentialsError(f"passwd file {path} is group-writable (mode {mode:04o}): {fix}")


def _read_text(path: str, kind: str) -> str:
    """Read a credentials file; utf-8-sig so a BOM left by a Windows editor is harmless."""
    try:
        with open(path, encoding="utf-8-sig") as handle:
            return handle.read()
    except OSError as err:
        raise CredentialsError(f"cannot read {kind} {path}: {err.strerror}") from None
    except UnicodeDecodeError:
        raise CredentialsError(f"{kind} {path} is not UTF-8 text") from None


def _pick(entries: Mapping[str | None, Credentials], bucket: str) -> Credentials | None:
    """A bucket-specific entry beats the default (key None) entry."""
    return entries.get(bucket) or entries.get(None)


def _parse_passwd(path: str, source: str) -> dict[str | None, Credentials]:
    """Map bucket name (None for "any bucket") to keys; the first entry for a bucket wins."""
    entries: dict[str | None, Credentials] = {}
    key_values: dict[str, str] = {}
    for number, raw in enumerate(_read_text(path, "passwd file").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        if sep and name.strip() in _KV_NAMES:
            key_values.setdefault(name.strip(), _require(value.strip(), path, number))
            continue
        bucket, access, secret = _parse_colon_line(line, path, number)
        entries.setdefault(bucket, Credentials(access, secret, source=source))
    if key_values:
        entries.setdefault(None, _key_value_credentials(key_values, path, source))
    return entries


def _parse_colon_line(line: str, path: str, number: int) -> tuple[str | None, str, str]:
    """Split ``ACCESS:SECRET`` or ``bucket:ACCESS:SECRET`` (bucket names never hold ':')."""
    parts = [part.strip() for part in line.split(":")]
    if len(parts) == 2:
        return None, _require(parts[0], path, number), _require(parts[1], path, number)
    if len(parts) == 3:
        bucket = _require(parts[0], path, number)
        return bucket, _require(parts[1], path, number), _require(parts[2], path, number)
    raise _malformed(path, number)


def _key_value_credentials(values: Mapping[str, str], path: str, source: str) -> Credentials:
    """Build the default entry from s3fs-fuse's AWSAccessKeyId=/AWSSecretKey= lines."""
    if _KV_ACCESS not in values or _KV_SECRET not in values:
        raise CredentialsError(f"passwd file {path} needs both {_KV_ACCESS}= and {_KV_SECRET}=")
    return Credentials(values[_KV_ACCESS], values[_KV_SECRET], values.get(_KV_TOKEN), source)


def _require(value: str, path: str, number: int) -> str:
    """Reject empty fields; the error names the line number only, never its text."""
    if not value:
        raise _malformed(path, number)
    return value


def _malformed(path: str, number: int) -> CredentialsError:
    """The line itself is not quoted because it may contain a secret."""
    return CredentialsError(
        f"passwd file {path} line {number} is malformed: "
        "expected ACCESS_KEY:SECRET or BUCKET:ACCESS_KEY:SECRET"
    )


def _expand_home(path: str, home: str) -> str:
    """Expand a leading ~ against the resolved home (the shell does not after '-o x=')."""
    if path == "~" or path.startswith("~/"):
        return home + path[1:]
    return path
