// Package proxy presents a Kafka cluster to clients through a single
// advertised address and forwards each request to the upstream broker that
// owns it. See docs/INTERNALS.md for the path of a request.
package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kmigrate/kmigrate/protocol"
	"github.com/xdg-go/scram"
)

// Proxy is one running proxy instance.
type Proxy struct {
	cfg       Config
	log       *slog.Logger
	source    *cluster
	target    *cluster // nil without a target
	gate      groupGate
	produces  produceGate
	pids      producerIDs
	txns      txnRegistry
	listener  net.Listener
	advHost   string
	advPort   int32
	metrics   *Metrics
	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	connsMu   sync.Mutex
	conns     map[*clientConn]struct{}
	closeOnce sync.Once

	versionTable apiVersionTable
	// scramServers check clients' SCRAM exchanges, by mechanism.
	scramServers map[string]*scram.Server

	budget *memoryBudget // memory.go
	// perIP counts open client connections per remote IP, under connsMu,
	// for MaxConnectionsPerIP.
	perIP map[string]int

	// draining is set by Shutdown: readers stop at their next frame and
	// the writers finish what was read.
	draining atomic.Bool
}

// Start connects to the upstream cluster, binds the listener and serves until
// Close. It fails when the upstream cannot be reached, because the proxy
// could not answer ApiVersions truthfully without it.
func Start(ctx context.Context, cfg Config) (*Proxy, error) {
	if cfg.MaxFrameBytes <= 0 {
		cfg.MaxFrameBytes = protocol.DefaultMaxFrameBytes
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = DefaultMaxInFlight
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Source.Name == "" {
		cfg.Source.Name = "source"
	}
	if len(cfg.Source.Bootstrap) == 0 {
		return nil, errors.New("source bootstrap servers are required")
	}
	if cfg.SyncProduce && cfg.Mirror == nil {
		return nil, errors.New("sync produce mode needs a mirror to the target")
	}
	p := &Proxy{
		cfg:    cfg,
		log:    cfg.Logger,
		conns:  make(map[*clientConn]struct{}),
		budget: newMemoryBudget(cfg.MaxBufferBytes, cfg.MaxConnBufferBytes),
		perIP:  make(map[string]int),
	}
	if p.metrics = cfg.Metrics; p.metrics == nil {
		p.metrics = NewMetrics(nil)
	}
	if cfg.ClientSASL != nil {
		var err error
		if p.scramServers, err = cfg.ClientSASL.servers(); err != nil {
			return nil, err
		}
		if err := p.checkPassThrough(); err != nil {
			return nil, err
		}
	}
	// Responses from upstream may be as large as what clients may send
	// plus fetch overhead; the client's own fetch.max.bytes bounds them.
	p.source = newCluster(cfg.Source, cfg.Logger, cfg.MaxFrameBytes)
	p.source.metrics = p.metrics
	startCtx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := p.source.start(startCtx); err != nil {
		return nil, err
	}
	if cfg.Target != nil {
		if cfg.Target.Name == "" {
			cfg.Target.Name = "target"
		}
		p.target = newCluster(*cfg.Target, cfg.Logger, cfg.MaxFrameBytes)
		p.target.metrics = p.metrics
		if err := p.target.start(startCtx); err != nil {
			return nil, err
		}
		if cfg.Routing == nil || cfg.Maps == nil || cfg.Covered == nil {
			return nil, errors.New("a target needs Routing, Maps and Covered to serve groups there")
		}
	}
	p.gate.init()
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", cfg.Listen, err)
	}
	adv := cfg.Advertise
	if adv == "" {
		adv = ln.Addr().String()
	}
	host, portStr, err := net.SplitHostPort(adv)
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("advertised address %q: %w", adv, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("advertised port %q: %w", portStr, err)
	}
	if cfg.ClientTLS != nil {
		ln = tls.NewListener(ln, cfg.ClientTLS)
	}
	p.listener, p.advHost, p.advPort = ln, host, int32(port)
	p.ctx, p.cancel = context.WithCancel(context.Background())
	p.wg.Add(1)
	go p.acceptLoop()
	p.log.Info("proxy listening", "listen", ln.Addr().String(), "advertise", adv, "node_id", cfg.NodeID, "source", cfg.Source.Bootstrap)
	return p, nil
}

// Addr is the address the listener bound.
func (p *Proxy) Addr() string { return p.listener.Addr().String() }

// Close stops accepting, closes every client connection and waits for their
// goroutines.
func (p *Proxy) Close() error {
	p.closeOnce.Do(func() {
		p.cancel()
		p.listener.Close()
		p.connsMu.Lock()
		for c := range p.conns {
			c.conn.Close()
		}
		p.connsMu.Unlock()
		p.wg.Wait()
		for _, cl := range []*cluster{p.source, p.target} {
			if cl == nil {
				continue
			}
			cl.controlMu.Lock()
			if cl.control != nil {
				cl.control.close(errors.New("proxy closing"))
			}
			cl.controlMu.Unlock()
		}
	})
	return nil
}

// Shutdown stops gracefully: no new connection is accepted, no new request
// is read, the requests already read are answered, then the proxy closes.
// Connections still busy when ctx ends are closed.
func (p *Proxy) Shutdown(ctx context.Context) error {
	p.draining.Store(true)
	p.listener.Close()
	p.connsMu.Lock()
	for c := range p.conns {
		// Wakes the reader blocked on the next frame; it then ends cleanly.
		c.conn.SetReadDeadline(time.Now())
	}
	p.connsMu.Unlock()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			p.connsMu.Lock()
			n := len(p.conns)
			p.connsMu.Unlock()
			if n == 0 {
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()
	<-done
	p.connsMu.Lock()
	left := len(p.conns)
	p.connsMu.Unlock()
	if left > 0 {
		p.log.Warn("closing connections still busy at the end of the shutdown grace period", "connections", left)
	}
	return p.Close()
}

func (p *Proxy) acceptLoop() {
	defer p.wg.Done()
	var backoff time.Duration
	for {
		conn, err := p.listener.Accept()
		if err != nil {
			if p.ctx.Err() != nil || p.draining.Load() {
				return
			}
			// Temporary failures (EMFILE) must not end the proxy.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			p.log.Warn("accept failed", "err", err, "retry_in", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		ip := remoteIP(conn)
		p.connsMu.Lock()
		if limit := p.cfg.MaxConnectionsPerIP; limit > 0 && p.perIP[ip] >= limit {
			p.connsMu.Unlock()
			// As Kafka's broker does past max.connections.per.ip: close
			// at once; the client backs off and reconnects.
			warnOnce.warn(p.log, "client address at its connection limit: closing new connections", "ip", ip, "max_connections_per_ip", limit)
			p.metrics.refusedConns.Inc()
			conn.Close()
			continue
		}
		c := newClientConn(p, conn)
		p.conns[c] = struct{}{}
		p.perIP[ip]++
		if p.draining.Load() { // accepted as Shutdown began
			conn.SetReadDeadline(time.Now())
		}
		p.connsMu.Unlock()
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			c.serve()
			p.connsMu.Lock()
			delete(p.conns, c)
			if p.perIP[ip]--; p.perIP[ip] <= 0 {
				delete(p.perIP, ip)
			}
			p.connsMu.Unlock()
		}()
	}
}

// remoteIP is the address a connection comes from, without its port.
func remoteIP(conn net.Conn) string {
	addr := conn.RemoteAddr().String()
	if host, _, err := net.SplitHostPort(addr); err == nil {
		return host
	}
	return addr
}
