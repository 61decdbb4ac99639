package kafkatest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
)

// KafkaVersion is the Apache Kafka version the harness runs.
const KafkaVersion = "4.1.1"

// EnvLibs names an environment variable that, when set, points at a
// directory of Kafka jars to use instead of running scripts/kafka-dist.sh.
const EnvLibs = "KMIGRATE_KAFKA_LIBS"

var dist struct {
	mu   sync.Mutex
	libs string // set once the distribution is known to be present
}

// LibsDir returns the directory holding the Kafka jars (and log4j2.properties),
// running scripts/kafka-dist.sh the first time it is called in this process.
// A failure is not cached, so a later call tries again.
func LibsDir(ctx context.Context) (string, error) {
	dist.mu.Lock()
	defer dist.mu.Unlock()
	if dist.libs != "" {
		return dist.libs, nil
	}
	if _, err := javaPath(); err != nil {
		return "", err
	}
	if libs := os.Getenv(EnvLibs); libs != "" {
		if _, err := os.Stat(filepath.Join(libs, "kafka_2.13-"+KafkaVersion+".jar")); err != nil {
			return "", fmt.Errorf("kafkatest: %s=%s does not hold Kafka %s jars: %w", EnvLibs, libs, KafkaVersion, err)
		}
		dist.libs = libs
		return libs, nil
	}

	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	script := filepath.Join(root, "scripts", "kafka-dist.sh")
	cmd := exec.CommandContext(ctx, "bash", script)
	cmd.Env = append(os.Environ(), "KAFKA_VERSION="+KafkaVersion)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("kafkatest: %s failed: %w\n%s", script, err, strings.TrimSpace(stderr.String()))
	}
	// The script's contract: the libs directory is the last line of stdout.
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	libs := strings.TrimSpace(lines[len(lines)-1])
	if libs == "" {
		return "", fmt.Errorf("kafkatest: %s printed no libs directory\n%s", script, stderr.String())
	}
	if _, err := os.Stat(filepath.Join(libs, "log4j2.properties")); err != nil {
		return "", fmt.Errorf("kafkatest: %s returned %q, which is not a Kafka libs dir: %w", script, libs, err)
	}
	dist.libs = libs
	return libs, nil
}

// RepoRoot returns the directory holding the module's go.mod, found by
// walking up from the working directory (go test runs each package's tests
// in that package's directory).
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("kafkatest: getwd: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("kafkatest: no go.mod found above the working directory")
		}
		dir = parent
	}
}

// javaPath finds the java launcher, preferring $JAVA_HOME/bin/java.
func javaPath() (string, error) {
	if home := os.Getenv("JAVA_HOME"); home != "" {
		p := filepath.Join(home, "bin", "java")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	p, err := exec.LookPath("java")
	if err != nil {
		return "", errors.New("kafkatest: java not found on PATH or in $JAVA_HOME: Kafka " + KafkaVersion +
			" needs Java 17+ (Debian: apt-get install -y openjdk-17-jre-headless maven)")
	}
	return p, nil
}
