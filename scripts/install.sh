#!/usr/bin/env bash
# Installs everything obsfs, its tests and its bench need on a Debian bookworm machine, as root:
# system packages from apt, and Python packages into ./.venv from requirements/*.txt, exactly the
# versions and files (sha256) recorded there. Safe to run again: apt only adds what is missing, and
# pip runs only when the locks or pyproject.toml changed since the last install into this venv.
set -euo pipefail
cd "$(dirname "$0")/.."

# fuse3..gcc: obsfs and building pyfuse3; s3fs, rclone, fio: the bench's peers; ceph-*, radosgw:
# the local Ceph RGW of scripts/rgw.sh; curl: rgw.sh waits with it; the rest: tests (strace counts
# the daemon's fsyncs).
APT_PACKAGES=(fuse3 libfuse3-dev pkg-config s3fs rclone fio rsync git python3 python3-venv python3-dev gcc procps
  psmisc strace ceph-mon ceph-osd radosgw ceph-common curl)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install: apt packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
# The build tools first: the packages that come as source (pyfuse3, crcmod, esdk-obs-python) are
# built without build isolation, with these, so that nothing is fetched outside the lock.
stamp=.venv/obsfs-installed-from
wanted=$(cat requirements/build.txt requirements/dev.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  pip=(.venv/bin/pip install -q --disable-pip-version-check --no-deps)
  "${pip[@]}" --require-hashes -r requirements/build.txt
  "${pip[@]}" --require-hashes --no-build-isolation -r requirements/dev.txt
  "${pip[@]}" --no-build-isolation -e .
  echo "$wanted" >"$stamp"
fi
# pip compiles what it installs, once; obsfs is installed editable, so its modules would be compiled
# at every start of a process, where PYTHONDONTWRITEBYTECODE is set (containers, some shells): 50 ms
# of a mount's start-up (docs/survival.md) that an installed obsfs does not pay. Compiled here,
# for the tests and the bench; a module changed since is compiled again when imported, as always.
.venv/bin/python -m compileall -q obsfs csi
echo "install: done (.venv ready)"
