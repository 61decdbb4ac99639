#!/usr/bin/env bash
# install-test-deps.sh: install what the integration tests need besides Go.
# Idempotent: each step is skipped when its result is already there.
#
#   kcat                    Debian package (apt-get), when not on PATH
#   chromium                Debian package (apt-get), when not on PATH: the
#                           admin status page is tested in headless Chromium
#   Python confluent-kafka  in a venv at $KMIGRATE_CACHE/venv
#   Kafka 4.1.1 jars        scripts/kafka-dist.sh (Maven Central via mvn)
#
# Environment:
#   KMIGRATE_CACHE   cache root (default: $HOME/.cache/kmigrate)
#   PYTHON           interpreter for the venv (default: python3)
#
# Prerequisites it does not install: java (17+) and mvn; on Debian:
#   apt-get install -y openjdk-17-jre-headless maven
# The last lines of stdout are KEY=value pairs for the installed tools.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${KMIGRATE_CACHE:-$HOME/.cache/kmigrate}"
VENV="$CACHE/venv"
PYTHON="${PYTHON:-python3}"
# confluent-kafka wheels bundle librdkafka, so no system library is needed.
CONFLUENT_KAFKA_SPEC="confluent-kafka>=2.6,<3"

log() { echo "install-test-deps.sh: $*" >&2; }
die() {
	echo "install-test-deps.sh: ERROR: $*" >&2
	exit 1
}

# apt-get needs root; use sudo when we are not root and it is available.
as_root() {
	if [[ $(id -u) -eq 0 ]]; then
		"$@"
	elif command -v sudo >/dev/null 2>&1; then
		sudo "$@"
	else
		die "need root (or sudo) to run: $*"
	fi
}

# --- kcat -------------------------------------------------------------------
if command -v kcat >/dev/null 2>&1; then
	log "kcat present: $(command -v kcat)"
else
	command -v apt-get >/dev/null 2>&1 || die "kcat is missing and apt-get is not available to install it"
	log "installing kcat with apt-get ..."
	as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 ||
		die "apt-get update failed"
	as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kcat >&2 ||
		die "apt-get install kcat failed"
	command -v kcat >/dev/null 2>&1 || die "kcat still not on PATH after apt-get install"
fi

# --- chromium (headless browser for the status page test) -------------------
chromium_bin() { command -v chromium 2>/dev/null || command -v chromium-browser 2>/dev/null; }
if chromium_bin >/dev/null; then
	log "chromium present: $(chromium_bin)"
else
	command -v apt-get >/dev/null 2>&1 || die "chromium is missing and apt-get is not available to install it"
	log "installing chromium with apt-get ..."
	as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 ||
		die "apt-get update failed"
	as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >&2 ||
		die "apt-get install chromium failed"
	chromium_bin >/dev/null || die "chromium still not on PATH after apt-get install"
fi

# --- Python confluent-kafka ---------------------------------------------------
if [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" -c 'import confluent_kafka' 2>/dev/null; then
	log "confluent-kafka present in $VENV"
else
	command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found (set PYTHON to a Python 3 interpreter)"
	mkdir -p "$CACHE" || die "cannot create $CACHE"
	if [[ ! -x "$VENV/bin/python" ]]; then
		log "creating venv $VENV ..."
		"$PYTHON" -m venv "$VENV" >&2 ||
			die "python venv creation failed (on Debian: apt-get install -y python3-venv)"
	fi
	log "installing $CONFLUENT_KAFKA_SPEC into $VENV ..."
	"$VENV/bin/python" -m pip install -q --disable-pip-version-check "$CONFLUENT_KAFKA_SPEC" >&2 ||
		die "pip install $CONFLUENT_KAFKA_SPEC failed"
	"$VENV/bin/python" -c 'import confluent_kafka' ||
		die "confluent_kafka does not import after installation"
fi

# --- Kafka jars -------------------------------------------------------------
LIBS="$("$HERE/kafka-dist.sh" | tail -n 1)" || die "scripts/kafka-dist.sh failed"

echo "KCAT=$(command -v kcat)"
echo "CHROMIUM=$(chromium_bin)"
echo "PYTHON=$VENV/bin/python"
echo "CONFLUENT_KAFKA=$("$VENV/bin/python" -c 'import confluent_kafka; print(confluent_kafka.__version__)')"
echo "KAFKA_LIBS=$LIBS"
