#!/usr/bin/env bash
# Installs everything, starts a local S3 server (moto) on 127.0.0.1, creates a bucket and mounts
# it with obsfs. Leaves both running and prints what to do next.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install.sh
PORT=${PORT:-9000}
MNT=${MNT:-/mnt/obsfs-demo}
STATE=${STATE:-/tmp/obsfs-demo}
mkdir -p "$STATE" "$MNT"
if ! .venv/bin/python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$PORT/')" 2>/dev/null; then
  nohup .venv/bin/python -m moto.server -H 127.0.0.1 -p "$PORT" >"$STATE/moto.log" 2>&1 &
  echo $! >"$STATE/moto.pid"
  for _ in $(seq 50); do
    .venv/bin/python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$PORT/')" 2>/dev/null && break
    sleep 0.2
  done
fi
printf 'demo-access-key:demo-secret-key\n' >"$STATE/passwd"
chmod 600 "$STATE/passwd"
.venv/bin/python - "$PORT" <<'PY'
import sys, boto3
s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{sys.argv[1]}", region_name="us-east-1",
                  aws_access_key_id="demo-access-key", aws_secret_access_key="demo-secret-key")
s3.create_bucket(Bucket="demo")
s3.put_object(Bucket="demo", Key="README.txt", Body=b"This object was written with boto3; obsfs shows it as a file.\n")
PY
if ! mountpoint -q "$MNT"; then
  .venv/bin/obsfs mount demo "$MNT" -o "url=http://127.0.0.1:$PORT,use_path_request_style,passwd_file=$STATE/passwd,logfile=$STATE/obsfs.log"
fi
cat <<MSG
obsfs: bucket 'demo' on http://127.0.0.1:$PORT is mounted at $MNT
  ls -l $MNT && cat $MNT/README.txt        # look around
  cp -a /etc/apt $MNT/ && ls -lR $MNT/apt  # write through it
  tail -f $STATE/obsfs.log                 # the daemon's log
  .venv/bin/obsfs umount $MNT              # flush and unmount
  kill \$(cat $STATE/moto.pid)             # stop the S3 server
MSG
