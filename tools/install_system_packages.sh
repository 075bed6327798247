#!/usr/bin/env bash
# Install the Debian packages PDF export needs, if they are missing and we can.
# Without root (or apt), name exactly what is missing and carry on: HTML export works without them.
set -u
missing=()
for pkg in "$@"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && { echo "system packages: all present ($*)"; exit 0; }
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
  echo "system packages: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >/tmp/wbc-apt.log 2>&1 \
    && { echo "system packages: installed"; exit 0; }
  echo "system packages: apt-get failed (see /tmp/wbc-apt.log)."
fi
echo "system packages MISSING: ${missing[*]}"
echo "  PDF export needs them; install with: sudo apt-get install ${missing[*]}"
echo "  (or set WBC_CHROMIUM to a Chromium binary). Everything else, HTML export included, works without them."
exit 0
