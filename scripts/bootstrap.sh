#!/usr/bin/env bash
# Installs everything syncclass needs on a fresh Debian machine: system packages (apt),
# a virtualenv in .venv and the project with its dev extras. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  python3-venv python3-dev   # venv for the project
  ffmpeg                     # ffprobe checks recordings and files in tests
  libportaudio2              # sounddevice (microphone/speakers) needs PortAudio
  libspeexdsp1               # echo cancellation, noise suppression, AGC of the classroom mic
  jackd2                     # tests: JACK dummy backend = a real-time sound device, no card
  espeak-ng                  # tests: real speech (echo cancellation, VAD ground truth)
  opencv-data                # Haar face cascades for the head count (no download at run time)
  postgresql                 # tests: the analytics report store on a real PostgreSQL
  xvfb                       # tests: an X server for the classroom screen window
  chromium                   # headless browser tests: dashboard, browser classrooms, observers
  fonts-wqy-zenhei           # CJK glyphs: classroom labels in the video, browser screenshots
  fonts-wqy-microhei         # the synthetic slides' sans font (like the YaHei of real courseware)
  tesseract-ocr              # tests/benchmarks: OCR of the courseware's slide text (legibility)
  tesseract-ocr-chi-sim      # ... in simplified Chinese
  iproute2                   # fault tests: network namespaces + TUN links (syncclass.netem)
  coturn                     # TURN relay for classrooms behind NAT/firewalls (scripts/turnserver.sh)
  openssl                    # scripts/turnserver.sh: a self-signed TLS certificate for turns:
  nftables                   # tests: a school NAT (masquerade) that blocks UDP, in a namespace
  redis-server               # several mixer nodes: placement and registry (scripts/redisserver.sh)
)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "bootstrap: installing system packages: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.syncclass-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "bootstrap: installing syncclass and its dependencies into .venv"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[dev]"
  # OpenCV 5 has CascadeClassifier (head count) only in the contrib wheel; both wheels
  # write the same cv2 folder, so an older .venv's opencv-python-headless must go.
  if .venv/bin/python -m pip show -q opencv-python-headless >/dev/null 2>&1; then
    .venv/bin/python -m pip uninstall -q -y opencv-python-headless
    .venv/bin/python -m pip install -q --force-reinstall --no-deps \
      "$(grep -o 'opencv-contrib-python-headless[^"]*' pyproject.toml)"
  fi
  touch "$stamp"
fi
# Browser libraries of the media server's pages (hls.js), from npm; not kept in git.
# Debian's npm only where no Node.js/npm is installed (its package conflicts with
# NodeSource's nodejs, which ships its own npm).
if ! command -v npm >/dev/null; then
  echo "bootstrap: installing npm (for hls.js)"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends npm >/dev/null
fi
bash scripts/vendor_js.sh
