package kafkatest

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// ownerFile, in each cluster directory, holds the PID of the test binary
// that made it.
const ownerFile = "owner.pid"

var staleOnce sync.Once

// removeStaleDirs deletes cluster directories left in the temp dir by test
// binaries that died without cleaning up (SIGKILL, a crash, a go test
// timeout): their brokers died with them (Pdeathsig), their data did not.
// A directory whose owner is still alive, or unknown, is left alone.
func removeStaleDirs() {
	staleOnce.Do(func() {
		dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "kafkatest-*"))
		for _, d := range dirs {
			b, err := os.ReadFile(filepath.Join(d, ownerFile))
			if err != nil {
				continue
			}
			pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
			if err != nil || pid <= 0 || pid == os.Getpid() {
				continue
			}
			// Signal 0 checks existence; EPERM means alive but not ours.
			if err := syscall.Kill(pid, 0); err == nil || err == syscall.EPERM {
				continue
			}
			os.RemoveAll(d)
		}
	})
}

func writeOwner(dir string) error {
	return os.WriteFile(filepath.Join(dir, ownerFile), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644)
}
