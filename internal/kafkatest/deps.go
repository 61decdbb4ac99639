package kafkatest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// CacheDir is where kafka-dist.sh and install-test-deps.sh keep what they
// fetch: ${KMIGRATE_CACHE:-$HOME/.cache/kmigrate}.
func CacheDir() string {
	if d := os.Getenv("KMIGRATE_CACHE"); d != "" {
		return d
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return filepath.Join(os.TempDir(), "kmigrate-cache")
	}
	return filepath.Join(home, ".cache", "kmigrate")
}

const installHint = "run scripts/install-test-deps.sh"

// Kcat returns the path of kcat, or an error saying how to install it.
func Kcat() (string, error) {
	p, err := exec.LookPath("kcat")
	if err != nil {
		return "", errors.New("kafkatest: kcat not found on PATH: " + installHint)
	}
	return p, nil
}

// Python returns the interpreter of the venv that install-test-deps.sh
// made with confluent-kafka, or an error saying how to make it.
func Python() (string, error) {
	p := filepath.Join(CacheDir(), "venv", "bin", "python")
	if err := exec.Command(p, "-c", "import confluent_kafka").Run(); err != nil {
		return "", fmt.Errorf("kafkatest: no Python with confluent-kafka at %s (%v): %s", p, err, installHint)
	}
	return p, nil
}
