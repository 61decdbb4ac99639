// Package proxytest runs the kmigrate binary as a child process for tests
// that need a real proxy process (kill -9, CLI, admin API).
package proxytest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kmigrate/kmigrate/internal/kafkatest"
)

var build struct {
	sync.Once
	path string
	err  error
}

// Binary builds cmd/kmigrate once per test binary and returns its path.
func Binary(t testing.TB) string {
	t.Helper()
	build.Do(func() {
		root, err := kafkatest.RepoRoot()
		if err != nil {
			build.err = err
			return
		}
		dir, err := os.MkdirTemp("", "kmigrate-bin")
		if err != nil {
			build.err = err
			return
		}
		build.path = filepath.Join(dir, "kmigrate")
		cmd := exec.Command("go", "build", "-o", build.path, "./cmd/kmigrate")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			build.err = fmt.Errorf("go build ./cmd/kmigrate: %v\n%s", err, out)
		}
	})
	if build.err != nil {
		t.Fatal(build.err)
	}
	return build.path
}

// FreeAddr returns a loopback address nobody listens on right now.
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// Process is a running `kmigrate proxy`.
type Process struct {
	Addr, Admin string
	LogPath     string
	cmd         *exec.Cmd
	exited      <-chan struct{} // closed once the process is reaped
}

// Start runs `kmigrate proxy --listen ADDR --admin-listen ADMIN args...` on
// free addresses and waits until it accepts clients. The process dies with
// the test. A free address can be taken by another process before the
// proxy binds it (an auto-picked raft port, a broker): Start then tries
// again on fresh addresses.
func Start(t testing.TB, args ...string) *Process {
	t.Helper()
	for attempt := 1; ; attempt++ {
		p, err := start(t, FreeAddr(t), args...)
		if err == nil {
			return p
		}
		if attempt < 4 && strings.Contains(err.Error(), "address already in use") {
			t.Logf("proxy start, attempt %d: %v; retrying on other addresses", attempt, firstLine(err.Error()))
			continue
		}
		t.Fatal(err)
	}
}

// StartOn is Start on a given client address, to restart a proxy where its
// clients expect it.
func StartOn(t testing.TB, listen string, args ...string) *Process {
	t.Helper()
	p, err := start(t, listen, args...)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func start(t testing.TB, listen string, args ...string) (*Process, error) {
	t.Helper()
	p := &Process{Addr: listen, Admin: FreeAddr(t), LogPath: filepath.Join(t.TempDir(), "proxy.log")}
	logFile, err := os.Create(p.LogPath)
	if err != nil {
		return nil, err
	}
	p.cmd = exec.Command(Binary(t), append([]string{"proxy", "--listen", p.Addr, "--admin-listen", p.Admin}, args...)...)
	p.cmd.Stdout, p.cmd.Stderr = logFile, logFile
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	exited := make(chan struct{})
	go func() { p.cmd.Wait(); close(exited) }()
	p.exited = exited
	deadline := time.Now().Add(60 * time.Second)
	for {
		if c, err := net.Dial("tcp", p.Addr); err == nil {
			c.Close()
			break
		}
		select {
		case <-exited:
			out, _ := os.ReadFile(p.LogPath)
			return nil, fmt.Errorf("proxy exited before listening on %s:\n%s", p.Addr, tail(out, 4000))
		default:
		}
		if time.Now().After(deadline) {
			p.cmd.Process.Kill()
			<-exited
			out, _ := os.ReadFile(p.LogPath)
			return nil, fmt.Errorf("proxy did not listen on %s:\n%s", p.Addr, tail(out, 4000))
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-exited
		if t.Failed() {
			out, _ := os.ReadFile(p.LogPath)
			t.Logf("proxy log:\n%s", tail(out, 4000))
		}
	})
	return p, nil
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// CLI runs a kmigrate subcommand against this proxy's admin address.
func (p *Process) CLI(t testing.TB, args ...string) (string, error) {
	t.Helper()
	out, err := exec.Command(Binary(t), append(args, "--admin", p.Admin)...).CombinedOutput()
	return string(out), err
}

// Kill9 kills the process with SIGKILL and reaps it.
func (p *Process) Kill9() { p.cmd.Process.Signal(syscall.SIGKILL); <-p.exited }

// Stop sends SIGTERM and waits.
func (p *Process) Stop() { p.cmd.Process.Signal(syscall.SIGTERM); <-p.exited }

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// Pid is the process id, for /proc readings.
func (p *Process) Pid() int { return p.cmd.Process.Pid }
