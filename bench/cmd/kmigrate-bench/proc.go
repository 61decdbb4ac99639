package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// clockTicks is USER_HZ, the unit of utime/stime in /proc/<pid>/stat. It is
// 100 on every Linux architecture Go supports (the kernel's CONFIG_HZ does
// not change it).
const clockTicks = 100

// procCPU returns the user+system CPU time a process has used so far, from
// /proc/<pid>/stat (fields 14 and 15, utime and stime).
func procCPU(pid int) (time.Duration, error) {
	self, _, err := procCPUs(pid)
	return self, err
}

// procCPUs returns a process's own CPU time and that of its children it
// has waited for (fields 16 and 17, cutime and cstime).
func procCPUs(pid int) (self, reaped time.Duration, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	return parseStat(b)
}

func parseStatCPU(b []byte) (time.Duration, error) {
	self, _, err := parseStat(b)
	return self, err
}

func parseStat(b []byte) (self, reaped time.Duration, err error) {
	// The command name (field 2) is in parentheses and may hold spaces
	// and parentheses itself: fields resume after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, errors.New("malformed /proc stat: no ')'")
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state), so field n is f[n-3].
	if len(f) < 15 {
		return 0, 0, fmt.Errorf("malformed /proc stat: %d fields after comm", len(f))
	}
	var v [4]int64 // utime stime cutime cstime
	for k := range v {
		if v[k], err = strconv.ParseInt(f[14-3+k], 10, 64); err != nil {
			return 0, 0, fmt.Errorf("malformed /proc stat: %w", err)
		}
	}
	tick := func(n int64) time.Duration { return time.Duration(n) * time.Second / clockTicks }
	return tick(v[0] + v[1]), tick(v[2] + v[3]), nil
}

// freeAddr returns a 127.0.0.1 address with a port that was free a moment
// ago (the usual bind-and-release race; startProxy fails clearly if lost).
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// buildProxy compiles ./cmd/kmigrate into dir and returns the binary's path.
func buildProxy(ctx context.Context, repoRoot, dir string) (string, error) {
	bin := filepath.Join(dir, "kmigrate")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/kmigrate")
	cmd.Dir = repoRoot
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build ./cmd/kmigrate: %w\n%s", err, out)
	}
	return bin, nil
}

// proxyProc is a running `kmigrate proxy` subprocess.
type proxyProc struct {
	cmd       *exec.Cmd
	addr      string // client listener
	adminAddr string
	logPath   string
	done      chan struct{}
	waitErr   error
}

// startProxy runs `bin proxy` in front of source and waits until it accepts
// connections on its listener and answers a Metadata request there.
func startProxy(ctx context.Context, bin, source, logPath string, extraArgs []string) (*proxyProc, error) {
	p, err := spawnProxy(bin, source, logPath, extraArgs)
	if err != nil {
		return nil, err
	}
	if err := p.waitReady(ctx, 30*time.Second); err != nil {
		p.stop()
		return nil, fmt.Errorf("proxy %s %s: %w\n--- proxy log tail ---\n%s", bin, strings.Join(p.cmd.Args[1:], " "), err, tail(logPath, 20))
	}
	return p, nil
}

// spawnProxy starts `bin proxy` in front of source and returns at once.
func spawnProxy(bin, source, logPath string, extraArgs []string) (*proxyProc, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	adminAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	// Its own data directory: the default (./kmigrate-data) would be shared
	// with any other kmigrate started from the same directory.
	dataDir := filepath.Join(filepath.Dir(logPath), "kmigrate-data-"+filepath.Base(addr))
	args := append([]string{"proxy",
		"--source-bootstrap", source,
		"--listen", addr,
		"--admin-listen", adminAddr,
		"--data-dir", dataDir,
	}, extraArgs...)
	p, err := startChild(exec.Command(bin, args...), addr, logPath)
	if err != nil {
		return nil, err
	}
	p.adminAddr = adminAddr
	return p, nil
}

// startChild starts cmd, which will listen at addr, with its output in
// logPath; it must not outlive the benchmark, even if that is killed.
func startChild(cmd *exec.Cmd, addr, logPath string) (*proxyProc, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close() // the child holds its own descriptor
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", cmd.Path, err)
	}
	p := &proxyProc{cmd: cmd, addr: addr, logPath: logPath, done: make(chan struct{})}
	go func() { p.waitErr = cmd.Wait(); close(p.done) }()
	return p, nil
}

func (p *proxyProc) pid() int { return p.cmd.Process.Pid }

func (p *proxyProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *proxyProc) waitReady(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		if p.exited() {
			return fmt.Errorf("exited before it was ready: %v", p.waitErr)
		}
		c, err := net.DialTimeout("tcp", p.addr, time.Second)
		if err == nil {
			c.Close()
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("listener %s did not accept connections within %s", p.addr, timeout)
		case <-time.After(50 * time.Millisecond):
		}
	}
	// Accepting is not serving: ask for metadata through it.
	cl, err := kgo.NewClient(kgo.SeedBrokers(p.addr))
	if err != nil {
		return err
	}
	defer cl.Close()
	for {
		_, err := kadm.NewClient(cl).BrokerMetadata(ctx)
		if err == nil {
			return nil
		}
		if p.exited() {
			return fmt.Errorf("exited before it was ready: %v", p.waitErr)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no Metadata answer through %s within %s: %v", p.addr, timeout, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// stop ends the proxy: SIGTERM, then SIGKILL after 10s.
func (p *proxyProc) stop() {
	if p.exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// tail returns the last n lines of a file, for error messages.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
