#!/usr/bin/env bash
# Start a local S3 server (moto) on 127.0.0.1 with a "demo" bucket, mount it with
# pys3fs on .demo/mnt, and show a few file operations through the mount.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD/.demo"
MNT="$ROOT/mnt"
PY=.venv/bin/python

scripts/setup.sh
scripts/demo-stop.sh >/dev/null 2>&1 || true
mkdir -p "$MNT" "$ROOT/cache"

PORT=$($PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
.venv/bin/moto_server -H 127.0.0.1 -p "$PORT" >"$ROOT/server.log" 2>&1 &
echo $! >"$ROOT/server.pid"
URL="http://127.0.0.1:$PORT"
for _ in $(seq 100); do
    $PY -c "import socket; socket.create_connection(('127.0.0.1', $PORT), 1)" 2>/dev/null && break
    sleep 0.1
done
echo "== S3 server (moto) listening on $URL"

# Credentials in s3fs-fuse's passwd-file format (the server accepts any key).
printf 'demo-access-key:demo-secret-key\n' >"$ROOT/passwd"
chmod 600 "$ROOT/passwd"

# "Another tool" fills the bucket: no metadata, no directory markers.
$PY - "$URL" <<'PYEOF'
import sys, boto3
s3 = boto3.client("s3", endpoint_url=sys.argv[1], region_name="us-east-1",
                  aws_access_key_id="demo-access-key", aws_secret_access_key="demo-secret-key")
s3.create_bucket(Bucket="demo")
s3.put_object(Bucket="demo", Key="README.txt", Body=b"Written by boto3, read through pys3fs.\n")
s3.put_object(Bucket="demo", Key="photos/2024/cat.jpg", Body=b"\xff\xd8 not really a jpeg")
PYEOF

.venv/bin/pys3fs demo "$MNT" -o "url=$URL,use_path_request_style,passwd_file=$ROOT/passwd,use_cache=$ROOT/cache"
echo "== mounted: $(grep " $MNT " /proc/self/mounts | cut -d' ' -f1-3)"

set -x
ls -l "$MNT"
cat "$MNT/README.txt"
echo "hello from pys3fs" >"$MNT/hello.txt"
mkdir "$MNT/docs"
cp /etc/os-release "$MNT/docs/"
chmod 600 "$MNT/docs/os-release"
mv "$MNT/hello.txt" "$MNT/docs/hello.txt"
ls -lR "$MNT"
set +x

echo "== the same bucket seen through the S3 API:"
$PY - "$URL" <<'PYEOF'
import sys, boto3
s3 = boto3.client("s3", endpoint_url=sys.argv[1], region_name="us-east-1",
                  aws_access_key_id="demo-access-key", aws_secret_access_key="demo-secret-key")
for obj in s3.list_objects_v2(Bucket="demo")["Contents"]:
    meta = s3.head_object(Bucket="demo", Key=obj["Key"])["Metadata"]
    print(f"  {obj['Key']:<24} {obj['Size']:>5} bytes  {meta or ''}")
PYEOF

cat <<MSG

The demo bucket stays mounted on $MNT (server: $URL).
Try it:   ls -l $MNT ; cp some-file $MNT/
Stop it:  make demo-stop   (unmounts with fusermount -u and stops the server)
MSG
