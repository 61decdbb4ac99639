package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"
)

// relay is what -relay measures in place of the proxy: bytes copied both
// ways between each client connection and the broker's relayed listener
// (which advertises the relay's address, so Metadata keeps clients on it),
// spliced socket to socket on Linux, with no Kafka parsing at all. Any
// proxy pays at least this: one more loopback hop, its two extra socket
// copies and its wake-ups, on the same cores as the broker and the client.
// Reading the proxy's ratio against the relay's separates what kmigrate
// costs from what the hop costs. It runs as its own process, as the proxy
// does: this program started again with relayEnv set (spawnRelay).
type relay struct {
	ln net.Listener
	to string

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

func startRelay(listen, to string) (*relay, error) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("relay: listen %s: %w", listen, err)
	}
	r := &relay{ln: ln, to: to, conns: make(map[net.Conn]struct{})}
	r.wg.Add(1)
	go r.acceptLoop()
	return r, nil
}

func (r *relay) addr() string { return r.ln.Addr().String() }

func (r *relay) acceptLoop() {
	defer r.wg.Done()
	for {
		client, err := r.ln.Accept()
		if err != nil {
			return // closed
		}
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			r.pipe(client)
		}()
	}
}

// pipe copies both ways until either side closes.
func (r *relay) pipe(client net.Conn) {
	broker, err := net.DialTimeout("tcp", r.to, 5*time.Second)
	if err != nil {
		client.Close()
		return
	}
	if !r.track(client, broker) {
		return // closing
	}
	defer r.untrack(client, broker)
	done := make(chan struct{})
	go func() {
		defer close(done)
		io.Copy(broker, client) //nolint:errcheck // a closed side ends the copy
		broker.(*net.TCPConn).CloseWrite()
	}()
	io.Copy(client, broker) //nolint:errcheck
	client.Close()
	broker.Close()
	<-done
}

func (r *relay) track(conns ...net.Conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.conns == nil {
		for _, c := range conns {
			c.Close()
		}
		return false
	}
	for _, c := range conns {
		r.conns[c] = struct{}{}
	}
	return true
}

func (r *relay) untrack(conns ...net.Conn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range conns {
		delete(r.conns, c)
	}
}

// close stops accepting, closes every relayed connection and waits for
// the copies to end.
func (r *relay) close() error {
	err := r.ln.Close()
	r.mu.Lock()
	for c := range r.conns {
		c.Close()
	}
	r.conns = nil
	r.mu.Unlock()
	r.wg.Wait()
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// relayEnv, set to "LISTEN TO", makes this program a relay and nothing else.
const relayEnv = "KMIGRATE_BENCH_RELAY"

// spawnRelay starts this program again as a relay from listen to to; it
// is stopped, waited for and tracked like the proxy subprocess.
func spawnRelay(ctx context.Context, listen, to, logPath string) (*proxyProc, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("relay: %w", err)
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), relayEnv+"="+listen+" "+to)
	p, err := startChild(cmd, listen, logPath)
	if err != nil {
		return nil, err
	}
	if err := p.waitReady(ctx, 30*time.Second); err != nil {
		p.stop()
		return nil, fmt.Errorf("relay %s -> %s: %w\n--- relay log tail ---\n%s", listen, to, err, tail(logPath, 20))
	}
	return p, nil
}

// serveRelay is main for the relay process: it relays until SIGTERM.
func serveRelay(spec string) int {
	listen, to, ok := strings.Cut(spec, " ")
	if !ok {
		fmt.Fprintf(os.Stderr, "%s=%q: want \"LISTEN TO\"\n", relayEnv, spec)
		return 2
	}
	r, err := startRelay(listen, to)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	<-sig
	if err := r.close(); err != nil {
		fmt.Fprintln(os.Stderr, "relay:", err)
		return 1
	}
	return 0
}
