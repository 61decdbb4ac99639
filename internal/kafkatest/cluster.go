package kafkatest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Cluster is one running single-node Kafka (KRaft broker+controller).
// Its methods are safe for concurrent use.
type Cluster struct {
	opts      Options
	libs      string         // Kafka jars
	dir       string         // temp dir: server.properties, data/, broker.log
	clusterID string         // KRaft cluster id
	ports     map[string]int // listener name -> port; fixed for the cluster's life
	certs     *certs         // nil unless Options.TLS

	mu      sync.Mutex // serialises start/stop; guards the fields below
	proc    *process   // the first node's running JVM, nil when stopped
	closed  bool
	startup time.Duration // how long the last start took
	brokers []*brokerNode // the broker-only nodes (Options.Brokers > 1)
}

// brokerNode is a broker-only node of a multi-broker cluster.
type brokerNode struct {
	id   int
	dir  string // under the cluster's: server.properties, data/, broker.log
	port int    // its PLAINTEXT listener
	proc *process
}

func (n *brokerNode) addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(n.port)) }

// process is one broker JVM run.
type process struct {
	cmd  *exec.Cmd
	log  *os.File
	done chan struct{} // closed once the JVM has exited and been reaped
	err  error         // exit error, valid after done
}

// Start formats a fresh data directory and starts a broker, returning once it
// answers Metadata requests. ctx bounds the whole call, including fetching
// the Kafka jars (slow only the first time on a machine); StartTimeout
// bounds formatting and start-up. The caller must Close the cluster (StartT
// does it on test cleanup, RunMain for whatever is left).
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	libs, err := LibsDir(ctx)
	if err != nil {
		return nil, err
	}
	removeStaleDirs()
	dir, err := os.MkdirTemp("", "kafkatest-"+opts.Name+"-")
	if err != nil {
		return nil, fmt.Errorf("kafkatest: create temp dir: %w", err)
	}
	if err := writeOwner(dir); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("kafkatest: %w", err)
	}
	c := &Cluster{opts: opts, libs: libs, dir: dir}
	if opts.TLS {
		if c.certs, err = newCerts(); err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("kafkatest: %w", err)
		}
		if err := os.WriteFile(c.CAFile(), c.certs.caPEM, 0o644); err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("kafkatest: write CA file: %w", err)
		}
		certFile, keyFile := c.clientCertPaths()
		if err := errors.Join(os.WriteFile(certFile, c.certs.clientCertPEM, 0o644), os.WriteFile(keyFile, c.certs.clientKeyPEM, 0o600)); err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("kafkatest: write client certificate: %w", err)
		}
	}
	register(c)

	// Free ports are found by binding and releasing them, so another process
	// can take one before the broker binds it; then the broker exits with
	// "Address already in use" and we try again with new ports.
	for attempt := 1; ; attempt++ {
		err = c.firstStart(ctx)
		if err == nil {
			return c, nil
		}
		if attempt >= maxStartAttempts || !errors.Is(err, errAddrInUse) {
			c.Close()
			return nil, err
		}
	}
}

var errAddrInUse = errors.New("address already in use")

// firstStart picks ports, writes the config, formats storage and boots.
func (c *Cluster) firstStart(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()

	began := time.Now()
	ctx, cancel := context.WithTimeout(ctx, c.opts.StartTimeout)
	defer cancel()

	names := []string{controllerListener}
	for _, l := range c.opts.listeners() {
		names = append(names, string(l))
	}
	ports, err := freePorts(len(names) + c.opts.Brokers - 1)
	if err != nil {
		return err
	}
	c.ports = make(map[string]int, len(names))
	for i, n := range names {
		c.ports[n] = ports[i]
	}
	c.brokers = nil
	for i, port := range ports[len(names):] {
		id := i + 2
		c.brokers = append(c.brokers, &brokerNode{id: id, dir: filepath.Join(c.dir, "broker-"+strconv.Itoa(id)), port: port})
	}
	// A retry starts from empty storage: --standalone records the
	// controller's endpoint, which changes with the ports.
	if err := os.RemoveAll(filepath.Join(c.dir, "data")); err != nil {
		return fmt.Errorf("kafkatest: clear data dir: %w", err)
	}
	if err := os.WriteFile(c.propsPath(), []byte(c.serverProperties()), 0o644); err != nil {
		return fmt.Errorf("kafkatest: write server.properties: %w", err)
	}
	if err := c.format(ctx); err != nil {
		return err
	}
	if err := c.boot(ctx); err != nil {
		return err
	}
	if err := c.startBrokers(ctx); err != nil {
		return err
	}
	c.startup = time.Since(began)
	return nil
}

// startBrokers formats and starts the broker-only nodes, all at once, and
// waits until the first node's Metadata lists every broker. c.mu must be
// held.
func (c *Cluster) startBrokers(ctx context.Context) error {
	if len(c.brokers) == 0 {
		return nil
	}
	errs := make([]error, len(c.brokers))
	var wg sync.WaitGroup
	for i, n := range c.brokers {
		wg.Go(func() { errs[i] = c.startBroker(ctx, n) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return c.waitBrokers(ctx)
}

// startBroker formats one broker-only node's storage with the cluster's id
// and starts its JVM.
func (c *Cluster) startBroker(ctx context.Context, n *brokerNode) error {
	if err := os.RemoveAll(n.dir); err != nil {
		return fmt.Errorf("kafkatest: clear %s: %w", n.dir, err)
	}
	if err := os.MkdirAll(n.dir, 0o755); err != nil {
		return fmt.Errorf("kafkatest: %w", err)
	}
	props := filepath.Join(n.dir, "server.properties")
	if err := os.WriteFile(props, []byte(c.brokerProperties(n)), 0o644); err != nil {
		return fmt.Errorf("kafkatest: write broker %d server.properties: %w", n.id, err)
	}
	fctx, cancel := context.WithTimeout(ctx, formatTimeout)
	defer cancel()
	if _, stderr, err := Tool(fctx, MainStorageTool, "format", "--cluster-id="+c.clusterID, "--config", props); err != nil {
		return fmt.Errorf("kafkatest: %s broker %d: kafka-storage format: %w\n%s", c.opts.Name, n.id, err, stderr)
	}
	p, err := c.startJVM(n.dir, props, fmt.Sprintf("%s broker %d", c.opts.Name, n.id), false)
	if err != nil {
		return err
	}
	n.proc = p
	return nil
}

// waitBrokers polls the first node's Metadata until it lists every broker
// of the cluster, or fails with the tail of a dead node's log.
func (c *Cluster) waitBrokers(ctx context.Context) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.Bootstrap()), kgo.DialTimeout(2*time.Second))
	if err != nil {
		return fmt.Errorf("metadata client: %w", err)
	}
	defer cl.Close()
	for {
		// A request of its own each time: kadm answers from the client's
		// metadata cache, which keeps the first answer's broker list.
		attempt, cancel := context.WithTimeout(ctx, 3*time.Second)
		req := kmsg.NewPtrMetadataRequest()
		req.Topics = []kmsg.MetadataRequestTopic{}
		md, err := req.RequestWith(attempt, cl)
		cancel()
		var registered int
		if err == nil {
			registered = len(md.Brokers)
		}
		if registered == c.opts.Brokers {
			return nil
		}
		for _, n := range c.brokers {
			select {
			case <-n.proc.done:
				return fmt.Errorf("kafkatest: %s broker %d exited during start-up: %v\n--- its log tail ---\n%s",
					c.opts.Name, n.id, n.proc.err, tailFile(filepath.Join(n.dir, "broker.log"), 30))
			default:
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kafkatest: %s: waiting for %d brokers: %w (last metadata: %d brokers, err %v)", c.opts.Name, c.opts.Brokers, ctx.Err(), registered, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// format runs `kafka-storage format --standalone` with a random cluster id,
// adding the SCRAM credentials of every user.
func (c *Cluster) format(ctx context.Context) error {
	var id [16]byte
	if _, err := rand.Read(id[:]); err != nil {
		return fmt.Errorf("kafkatest: cluster id: %w", err)
	}
	// Kafka's Uuid string form: URL-safe base64 without padding.
	c.clusterID = base64.RawURLEncoding.EncodeToString(id[:])

	args := []string{"format", "--cluster-id=" + c.clusterID, "--config", c.propsPath(), "--standalone"}
	if c.opts.SASL {
		for _, u := range c.opts.Users {
			for _, m := range []string{MechScramSHA256, MechScramSHA512} {
				args = append(args, "--add-scram", fmt.Sprintf("%s=[name=%s,password=%s]", m, u.Name, u.Password))
			}
		}
	}
	fctx, cancel := context.WithTimeout(ctx, formatTimeout)
	defer cancel()
	if _, stderr, err := Tool(fctx, MainStorageTool, args...); err != nil {
		return fmt.Errorf("kafkatest: %s: kafka-storage format: %w\n%s", c.opts.Name, err, stderr)
	}
	return nil
}

// boot starts the first node's JVM on the existing config and data and
// waits until it answers Metadata, or fails with the tail of its log.
// c.mu must be held.
func (c *Cluster) boot(ctx context.Context) error {
	p, err := c.startJVM(c.dir, c.propsPath(), c.opts.Name, true)
	if err != nil {
		return err
	}
	c.proc = p

	if err := c.waitReady(ctx, p); err != nil {
		c.stopLocked(syscall.SIGKILL, 0)
		tail := c.errorTail(40)
		if strings.Contains(tail, "Address already in use") {
			err = fmt.Errorf("%w: %w", errAddrInUse, err)
		}
		return fmt.Errorf("kafkatest: broker %s did not become ready: %w\n--- broker log tail (%s) ---\n%s",
			c.opts.Name, err, c.LogFile(), tail)
	}
	return nil
}

// startJVM starts a Kafka node on the server.properties at props, logging
// to dir/broker.log. Only the first node may dump the class archive (cds.go):
// nodes starting together would race to write it.
func (c *Cluster) startJVM(dir, props, label string, dumpCDS bool) (*process, error) {
	java, err := javaPath()
	if err != nil {
		return nil, err
	}
	logf, err := os.OpenFile(filepath.Join(dir, "broker.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("kafkatest: open broker log: %w", err)
	}
	fmt.Fprintf(logf, "==== kafkatest: starting broker %s at %s\n", label, time.Now().Format(time.RFC3339Nano))

	cds, cdsFinish := cdsFlags(c.libs, java, archiveName(MainKafka), dumpCDS)
	args := append(BrokerJVMOpts(c.opts.HeapMB, c.opts.ShippedJVM), cds...)
	args = append(args,
		"-Dlog4j2.configurationFile="+filepath.Join(c.libs, "log4j2.properties"),
		"-Dkafkatest.log.level="+c.opts.LogLevel,
		"-Dkafka.logs.dir="+filepath.Join(dir, "logs"),
		"-cp", filepath.Join(c.libs, "*"),
		MainKafka, props)
	cmd := exec.Command(java, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		logf.Close()
		cdsFinish(nil)
		return nil, fmt.Errorf("kafkatest: start broker JVM (%s): %w", label, err)
	}
	p := &process{cmd: cmd, log: logf, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		p.log.Close()
		// A broker that exited cleanly (Stop, Close) has dumped its class
		// archive by now; one that was killed has not.
		cdsFinish(cmd.ProcessState)
		close(p.done)
	}()
	return p, nil
}

// BrokerJVMOpts are the broker JVM's flags. By default they keep the
// broker small, a heap that starts at 128 MiB and the serial collector, so
// that a couple of brokers plus the tests fit on 2 CPUs. shipped gives the
// heap and collector settings of Kafka's own start scripts instead
// (KAFKA_HEAP_OPTS, KAFKA_JVM_PERFORMANCE_OPTS).
func BrokerJVMOpts(heapMB int, shipped bool) []string {
	initialMB, gc := min(heapMB, 128), []string{"-XX:+UseSerialGC"}
	if shipped {
		initialMB = heapMB
		gc = []string{"-server", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
			"-XX:InitiatingHeapOccupancyPercent=35", "-XX:+ExplicitGCInvokesConcurrent"}
	}
	opts := []string{"-Xms" + strconv.Itoa(initialMB) + "m", "-Xmx" + strconv.Itoa(heapMB) + "m"}
	return append(append(opts, gc...),
		"-XX:+ExitOnOutOfMemoryError",
		"-XX:-UsePerfData", // no /tmp/hsperfdata_* files
		"-Djava.awt.headless=true",
	)
}

// waitReady polls Metadata on the PLAINTEXT listener until the broker
// reports itself and an active controller.
func (c *Cluster) waitReady(ctx context.Context, p *process) error {
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(c.Bootstrap()),
		kgo.DialTimeout(2*time.Second),
		kgo.RetryTimeout(2*time.Second),
	)
	if err != nil {
		return fmt.Errorf("metadata client: %w", err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)

	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	var lastErr error
	for {
		attempt, cancel := context.WithTimeout(ctx, 3*time.Second)
		md, err := adm.BrokerMetadata(attempt)
		cancel()
		if err == nil && len(md.Brokers) > 0 && md.Controller >= 0 {
			return nil
		}
		if err == nil {
			err = fmt.Errorf("metadata has %d brokers, controller %d", len(md.Brokers), md.Controller)
		}
		lastErr = err
		select {
		case <-p.done:
			return fmt.Errorf("broker JVM exited during start-up: %v", p.err)
		case <-ctx.Done():
			return fmt.Errorf("%w (last metadata error: %v)", ctx.Err(), lastErr)
		case <-tick.C:
		}
	}
}

// StartT starts a cluster for test t and closes it when the test ends. It
// fails the test (never skips) when the cluster cannot start, including when
// java or mvn are missing.
func StartT(t testing.TB, opts Options) *Cluster {
	t.Helper()
	c, err := Start(context.Background(), opts)
	if err != nil {
		t.Fatalf("kafkatest.StartT: %v", err)
	}
	t.Logf("kafkatest: %s started in %v at %s (data %s)", c.opts.Name, c.StartupTime().Round(time.Millisecond), c.Bootstrap(), c.dir)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("kafkatest: %s broker log tail:\n%s", c.opts.Name, c.LogTail(30))
		}
		c.Close()
	})
	return c
}

// Restart stops the broker gracefully (if it is running) and starts it again
// on the same ports and data, returning once it answers Metadata. It is how
// tests simulate a broker restart; Kill then Restart simulates a crash.
func (c *Cluster) Restart(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return fmt.Errorf("kafkatest: %s: restart of a closed cluster", c.opts.Name)
	}
	c.stopLocked(syscall.SIGTERM, stopGracePeriod)
	began := time.Now()
	ctx, cancel := context.WithTimeout(ctx, c.opts.StartTimeout)
	defer cancel()
	if err := c.boot(ctx); err != nil {
		return err
	}
	c.startup = time.Since(began)
	return nil
}

// Stop shuts the broker down with SIGTERM (a clean, controlled shutdown),
// escalating to SIGKILL after 20s. Data and ports are kept for Restart.
func (c *Cluster) Stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stopLocked(syscall.SIGTERM, stopGracePeriod)
}

// Kill ends the broker at once with SIGKILL, like a crash. Data and ports are
// kept for Restart.
func (c *Cluster) Kill() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stopLocked(syscall.SIGKILL, 0)
}

// stopLocked signals the broker's process group and waits for the JVM to be
// reaped, sending SIGKILL if it outlives grace. c.mu must be held.
func (c *Cluster) stopLocked(sig syscall.Signal, grace time.Duration) {
	p := c.proc
	if p == nil {
		return
	}
	c.proc = nil
	stopProcess(p, sig, grace)
}

// stopProcess signals a node's process group and waits for the JVM to be
// reaped, sending SIGKILL if it outlives grace.
func stopProcess(p *process, sig syscall.Signal, grace time.Duration) {
	signalGroup(p.cmd.Process, sig)
	if sig != syscall.SIGKILL {
		timer := time.NewTimer(grace)
		defer timer.Stop()
		select {
		case <-p.done:
			// The JVM is gone; make sure nothing it forked lingers.
			signalGroup(p.cmd.Process, syscall.SIGKILL)
			return
		case <-timer.C:
		}
		signalGroup(p.cmd.Process, syscall.SIGKILL)
	}
	<-p.done
}

// Close stops the broker (SIGTERM, then SIGKILL) and deletes its directory.
// It is idempotent.
func (c *Cluster) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	c.closed = true
	var wg sync.WaitGroup
	for _, n := range c.brokers {
		if n.proc != nil {
			wg.Go(func() { stopProcess(n.proc, syscall.SIGTERM, stopGracePeriod) })
		}
	}
	c.stopLocked(syscall.SIGTERM, stopGracePeriod)
	wg.Wait()
	os.RemoveAll(c.dir)
	unregister(c)
}

// Running reports whether the broker JVM is alive.
func (c *Cluster) Running() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.proc == nil {
		return false
	}
	select {
	case <-c.proc.done:
		return false
	default:
		return true
	}
}

// Name is Options.Name.
func (c *Cluster) Name() string { return c.opts.Name }

// Bootstrap is the PLAINTEXT listener's address, "127.0.0.1:port".
func (c *Cluster) Bootstrap() string { return c.Addr(Plaintext) }

// Addr is the address of listener l, or "" if the cluster does not have it.
func (c *Cluster) Addr(l Listener) string {
	if _, ok := c.ports[string(l)]; !ok || l == controllerListener {
		return ""
	}
	return c.hostPort(string(l))
}

func (c *Cluster) hostPort(listener string) string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(c.ports[listener]))
}

// Users are the SASL users (empty without Options.SASL).
func (c *Cluster) Users() []User { return append([]User(nil), c.opts.Users...) }

// ClusterID is the KRaft cluster id the storage was formatted with.
func (c *Cluster) ClusterID() string { return c.clusterID }

// Dir is the cluster's temporary directory (removed by Close).
func (c *Cluster) Dir() string { return c.dir }

// StartupTime is how long the last Start or Restart took, from formatting
// (for Start) to the first successful Metadata response.
func (c *Cluster) StartupTime() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.startup
}

// TLSConfig returns a client TLS config trusting the cluster's CA, for the
// SSL and SASL_SSL listeners; nil without Options.TLS.
func (c *Cluster) TLSConfig() *tls.Config {
	if c.certs == nil {
		return nil
	}
	return c.certs.tlsConfig()
}

// CAFile is the path of the cluster CA's PEM certificate (for kcat, Python
// clients and the like); "" without Options.TLS.
func (c *Cluster) CAFile() string {
	if !c.opts.TLS {
		return ""
	}
	return filepath.Join(c.dir, "ca.pem")
}

// ClientCertFiles are the paths of a PEM client certificate (CN
// ClientCertCN) and its unencrypted key, signed by the cluster's CA, for
// the SSL listener of a cluster with Options.MTLS; "" without Options.TLS.
func (c *Cluster) ClientCertFiles() (certFile, keyFile string) {
	if !c.opts.TLS {
		return "", ""
	}
	return c.clientCertPaths()
}

func (c *Cluster) clientCertPaths() (certFile, keyFile string) {
	return filepath.Join(c.dir, "client.pem"), filepath.Join(c.dir, "client-key.pem")
}

// ClientTLSConfig is TLSConfig presenting the client certificate of
// ClientCertFiles, for a cluster with Options.MTLS; nil without Options.TLS.
func (c *Cluster) ClientTLSConfig() *tls.Config {
	if c.certs == nil {
		return nil
	}
	cert, err := tls.X509KeyPair(c.certs.clientCertPEM, c.certs.clientKeyPEM)
	if err != nil {
		panic("kafkatest: the generated client certificate does not load: " + err.Error())
	}
	cfg := c.certs.tlsConfig()
	cfg.Certificates = []tls.Certificate{cert}
	return cfg
}

// LogFile is the path of the broker's stdout/stderr log, which accumulates
// over restarts.
func (c *Cluster) LogFile() string { return filepath.Join(c.dir, "broker.log") }

func (c *Cluster) propsPath() string { return filepath.Join(c.dir, "server.properties") }

// LogTail returns the last n lines of the broker log.
func (c *Cluster) LogTail(n int) string { return tailFile(c.LogFile(), n) }

// tailFile returns the last n lines of a broker log.
func tailFile(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(no broker log: %v)", err)
	}
	defer f.Close()
	// The log is at WARN by default and small, but INFO logs can grow: only
	// the end of the file matters.
	const maxRead = 256 << 10
	if st, err := f.Stat(); err == nil && st.Size() > maxRead {
		f.Seek(st.Size()-maxRead, io.SeekStart)
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return fmt.Sprintf("(reading broker log: %v)", err)
	}
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// errorTail is LogTail without Java stack frames, which would otherwise push
// the exception messages out of a short tail.
func (c *Cluster) errorTail(n int) string {
	var keep []string
	for _, l := range strings.Split(c.LogTail(10*n), "\n") {
		t := strings.TrimSpace(l)
		if strings.HasPrefix(t, "at ") || (strings.HasPrefix(t, "...") && strings.HasSuffix(t, "more")) {
			continue
		}
		keep = append(keep, l)
	}
	if len(keep) > n {
		keep = keep[len(keep)-n:]
	}
	return strings.Join(keep, "\n")
}

// Client returns a franz-go client seeded with the PLAINTEXT listener, with
// topic auto-creation allowed; opts are appended (and may override).
func (c *Cluster) Client(opts ...kgo.Opt) (*kgo.Client, error) {
	base := []kgo.Opt{kgo.SeedBrokers(c.Bootstrap()), kgo.AllowAutoTopicCreation()}
	cl, err := kgo.NewClient(append(base, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("kafkatest: new client for %s: %w", c.opts.Name, err)
	}
	return cl, nil
}

// usedPorts remembers every port handed out in this process so that two
// clusters started concurrently never get the same one.
var usedPorts = struct {
	sync.Mutex
	m map[int]bool
}{m: map[int]bool{}}

// freePorts asks the kernel for n distinct free loopback ports. All n
// listeners are held open together so the kernel cannot repeat itself.
func freePorts(n int) ([]int, error) {
	usedPorts.Lock()
	defer usedPorts.Unlock()
	var held []net.Listener
	defer func() {
		for _, l := range held {
			l.Close()
		}
	}()
	var ports []int
	for len(ports) < n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("kafkatest: find a free port: %w", err)
		}
		held = append(held, l)
		port := l.Addr().(*net.TCPAddr).Port
		if usedPorts.m[port] {
			continue
		}
		usedPorts.m[port] = true
		ports = append(ports, port)
	}
	return ports, nil
}

// CreateTopic creates a topic with replication factor 1 and waits for the
// broker to answer; an existing topic is an error.
func (c *Cluster) CreateTopic(ctx context.Context, topic string, partitions int32, configs map[string]*string) error {
	cl, err := c.Client()
	if err != nil {
		return err
	}
	defer cl.Close()
	resp, err := kadm.NewClient(cl).CreateTopic(ctx, partitions, 1, configs, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		return fmt.Errorf("create topic %s on %s: %w", topic, c.Name(), err)
	}
	return nil
}
