#!/usr/bin/env bash
# kafka-dist.sh: make an Apache Kafka distribution (jars only) available for
# the integration tests, fetched from Maven Central with mvn because the
# apache.org download site is not reachable from the build machines.
#
# Usage: scripts/kafka-dist.sh
#
# Environment:
#   KMIGRATE_CACHE   cache root (default: $HOME/.cache/kmigrate)
#   KAFKA_VERSION    Kafka version (default: 4.1.1)
#
# Result: $KMIGRATE_CACHE/kafka-$KAFKA_VERSION/libs holds every jar needed to
# run the broker (kafka.Kafka), the CLI tools (org.apache.kafka.tools.*) and
# MirrorMaker 2 (org.apache.kafka.connect.mirror.MirrorMaker), plus
# log4j2.properties, a quiet logging config. The libs dir is printed on the
# last line of stdout; everything else goes to stderr. Run the JVMs as
#   java -Dlog4j2.configurationFile=$LIBS/log4j2.properties -cp "$LIBS/*" MAIN
#
# Idempotent: a marker file (.complete) written after a successful download
# makes later runs return at once. Delete the directory to force a refetch.
set -euo pipefail

KAFKA_VERSION="${KAFKA_VERSION:-4.1.1}"
# Kafka 4.1.x builds against log4j 2.24.x; pinning it keeps the classpath
# free of mixed log4j versions.
LOG4J_VERSION="2.24.3"
DEP_PLUGIN="org.apache.maven.plugins:maven-dependency-plugin:3.8.1"

CACHE="${KMIGRATE_CACHE:-$HOME/.cache/kmigrate}"
DIST="$CACHE/kafka-$KAFKA_VERSION"
LIBS="$DIST/libs"
MARKER="$DIST/.complete"

die() {
	echo "kafka-dist.sh: ERROR: $*" >&2
	exit 1
}

# write_log4j_config DIR: the quiet logging config used by brokers and tools
# (passed as -Dlog4j2.configurationFile by internal/kafkatest): WARN and above
# to stderr, which the harness sends to the broker's log file. The root level
# can be raised per JVM with -Dkafkatest.log.level=INFO. Rewritten on every
# run (atomically) so that changes here reach existing caches.
write_log4j_config() {
	cat >"$1/log4j2.properties.tmp" <<'PROPS'
status = warn
name = kmigrate-quiet
appender.stderr.type = Console
appender.stderr.name = STDERR
appender.stderr.target = SYSTEM_ERR
appender.stderr.layout.type = PatternLayout
appender.stderr.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = ${sys:kafkatest.log.level:-WARN}
rootLogger.appenderRef.stderr.ref = STDERR
# The broker's start/stop lines are worth having in a failure's log tail.
logger.kafkaserver.name = kafka.server.KafkaRaftServer
logger.kafkaserver.level = info
logger.brokerserver.name = kafka.server.BrokerServer
logger.brokerserver.level = info
PROPS
	mv -f "$1/log4j2.properties.tmp" "$1/log4j2.properties"
}

if [[ -f "$MARKER" && -d "$LIBS" ]]; then
	write_log4j_config "$LIBS" || die "cannot write $LIBS/log4j2.properties"
	echo "$LIBS"
	exit 0
fi

command -v java >/dev/null 2>&1 || die "java not found on PATH (need a JDK/JRE 17+; on Debian: apt-get install -y openjdk-17-jre-headless)"
command -v mvn >/dev/null 2>&1 || die "mvn not found on PATH (need Maven 3.8+; on Debian: apt-get install -y maven)"

mkdir -p "$DIST" || die "cannot create cache dir $DIST"

# Serialise concurrent runs (several test binaries may start at once).
exec 9>"$DIST/.lock"
if command -v flock >/dev/null 2>&1; then
	flock 9 || die "cannot lock $DIST/.lock"
	# Another run may have finished while we waited.
	if [[ -f "$MARKER" && -d "$LIBS" ]]; then
		echo "$LIBS"
		exit 0
	fi
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/kafka-dist.XXXXXX")" || die "mktemp failed"
trap 'rm -rf "$WORK"' EXIT

dep() { # groupId artifactId version
	printf '    <dependency><groupId>%s</groupId><artifactId>%s</artifactId><version>%s</version></dependency>\n' "$1" "$2" "$3"
}

{
	cat <<POM
<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0"
         xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
         xsi:schemaLocation="http://maven.apache.org/POM/4.0.0 http://maven.apache.org/xsd/maven-4.0.0.xsd">
  <modelVersion>4.0.0</modelVersion>
  <groupId>io.kmigrate</groupId>
  <artifactId>kafka-dist</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
POM
	for a in kafka_2.13 kafka-tools kafka-clients kafka-server kafka-storage \
		kafka-group-coordinator kafka-metadata kafka-raft \
		kafka-transaction-coordinator kafka-share-coordinator \
		kafka-server-common connect-mirror connect-mirror-client \
		connect-runtime; do
		dep org.apache.kafka "$a" "$KAFKA_VERSION"
	done
	# Kafka 4.1 logs through slf4j 1.7 (slf4j-api 1.7.36 comes with
	# kafka-clients) -> log4j2, exactly like the official tarball: the binding
	# must be log4j-slf4j-impl (slf4j 1.x), not log4j-slf4j2-impl, or slf4j
	# falls back to NOP and the broker log is empty.
	for a in log4j-api log4j-core log4j-slf4j-impl log4j-1.2-api; do
		dep org.apache.logging.log4j "$a" "$LOG4J_VERSION"
	done
	cat <<POM
  </dependencies>
</project>
POM
} >"$WORK/pom.xml"

echo "kafka-dist.sh: fetching Kafka $KAFKA_VERSION jars from Maven Central into $LIBS ..." >&2
rm -rf "$LIBS.tmp"
if ! (cd "$WORK" && mvn -B -q -Dstyle.color=never "$DEP_PLUGIN:copy-dependencies" \
	-DincludeScope=runtime \
	-DoutputDirectory="$LIBS.tmp" >"$WORK/mvn.log" 2>&1); then
	tail -n 40 "$WORK/mvn.log" >&2 || true
	die "mvn could not fetch Kafka $KAFKA_VERSION from Maven Central (see output above)"
fi

# Sanity-check that the main entry points are present.
for jar in "kafka_2.13-$KAFKA_VERSION.jar" "kafka-tools-$KAFKA_VERSION.jar" \
	"kafka-clients-$KAFKA_VERSION.jar" "connect-mirror-$KAFKA_VERSION.jar" \
	"log4j-core-$LOG4J_VERSION.jar"; do
	[[ -f "$LIBS.tmp/$jar" ]] || die "download incomplete: $jar missing from $LIBS.tmp"
done

write_log4j_config "$LIBS.tmp" || die "cannot write log4j2.properties"
rm -rf "$LIBS"
mv "$LIBS.tmp" "$LIBS" || die "cannot move $LIBS.tmp to $LIBS"
date -u +%Y-%m-%dT%H:%M:%SZ >"$MARKER"
echo "kafka-dist.sh: done ($(ls "$LIBS" | wc -l) files)" >&2
echo "$LIBS"
