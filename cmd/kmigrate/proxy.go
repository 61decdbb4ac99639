package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/kmigrate/kmigrate/offsetsync"
	"github.com/kmigrate/kmigrate/proxy"
	"github.com/kmigrate/kmigrate/raftstore"
	"github.com/kmigrate/kmigrate/replicate"
	"github.com/kmigrate/kmigrate/replicate/raftmaps"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// upstreamFlags are the connection settings of one cluster, registered
// under a prefix ("source-").
type upstreamFlags struct {
	bootstrap     string
	tls           bool
	tlsCA         string
	tlsCert       string
	tlsKey        string
	tlsServerName string
	saslMechanism string
	saslUser      string
	saslPassword  string
	auth          upstreamAuthFlags // OAUTHBEARER, AWS_MSK_IAM
}

func (u *upstreamFlags) register(fs *flag.FlagSet, prefix, what string) {
	fs.StringVar(&u.bootstrap, prefix+"bootstrap", "", "comma-separated host:port seed brokers of the "+what+" cluster")
	fs.BoolVar(&u.tls, prefix+"tls", false, "connect to the "+what+" cluster with TLS")
	fs.StringVar(&u.tlsCA, prefix+"tls-ca", "", "PEM CA bundle to verify the "+what+" brokers (implies TLS; default: system roots)")
	fs.StringVar(&u.tlsCert, prefix+"tls-cert", "", "PEM client certificate for mTLS to the "+what+" cluster")
	fs.StringVar(&u.tlsKey, prefix+"tls-key", "", "PEM client key for mTLS to the "+what+" cluster")
	fs.StringVar(&u.tlsServerName, prefix+"tls-server-name", "", "expected TLS server name of the "+what+" brokers")
	fs.StringVar(&u.saslMechanism, prefix+"sasl-mechanism", "", "PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER or AWS_MSK_IAM toward the "+what+" cluster")
	fs.StringVar(&u.saslUser, prefix+"sasl-username", "", "SASL username for the "+what+" cluster")
	fs.StringVar(&u.saslPassword, prefix+"sasl-password", "", "SASL password for the "+what+" cluster (prefer the environment variable "+envName(prefix+"sasl-password")+")")
	u.auth.register(fs, prefix, what)
}

func (u *upstreamFlags) build(name string) (proxy.Upstream, error) {
	up := proxy.Upstream{Name: name}
	for _, s := range strings.Split(u.bootstrap, ",") {
		if s = strings.TrimSpace(s); s != "" {
			if _, _, err := net.SplitHostPort(s); err != nil {
				return up, fmt.Errorf("--%s-bootstrap: %q is not host:port", name, s)
			}
			up.Bootstrap = append(up.Bootstrap, s)
		}
	}
	if len(up.Bootstrap) == 0 {
		return up, fmt.Errorf("--%s-bootstrap is required (host:port of a %s broker)", name, name)
	}
	if u.tls || u.tlsCA != "" || u.tlsCert != "" {
		cfg, err := clientTLS(u.tlsCA, u.tlsCert, u.tlsKey, u.tlsServerName)
		if err != nil {
			return up, fmt.Errorf("--%s-tls: %w", name, err)
		}
		up.TLS = cfg
	}
	mech, err := u.auth.mechanism(name, u.saslMechanism)
	if err != nil {
		return up, err
	}
	if mech == nil {
		mech, err = saslMechanism(u.saslMechanism, u.saslUser, u.saslPassword)
	}
	if err != nil {
		return up, fmt.Errorf("--%s-sasl-mechanism: %w", name, err)
	}
	up.SASL = mech
	return up, nil
}

func saslMechanism(name, user, pass string) (sasl.Mechanism, error) {
	switch strings.ToUpper(name) {
	case "":
		return nil, nil
	case "PLAIN":
		return plain.Auth{User: user, Pass: pass}.AsMechanism(), nil
	case "SCRAM-SHA-256":
		return scram.Auth{User: user, Pass: pass}.AsSha256Mechanism(), nil
	case "SCRAM-SHA-512":
		return scram.Auth{User: user, Pass: pass}.AsSha512Mechanism(), nil
	default:
		return nil, fmt.Errorf("unsupported mechanism %q (use PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER or AWS_MSK_IAM)", name)
	}
}

func clientTLS(caFile, certFile, keyFile, serverName string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: serverName}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s holds no PEM certificate", caFile)
		}
		cfg.RootCAs = pool
	}
	if certFile != "" || keyFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// kgoOpts turns an upstream's connection settings into franz-go options
// for the mirror's clients.
func kgoOpts(up proxy.Upstream) []kgo.Opt {
	opts := []kgo.Opt{kgo.SeedBrokers(up.Bootstrap...), kgo.ClientID("kmigrate-mirror")}
	if up.TLS != nil {
		opts = append(opts, kgo.DialTLSConfig(up.TLS))
	}
	if up.SASL != nil {
		opts = append(opts, kgo.SASL(up.SASL))
	}
	return opts
}

// mirrorFlags configure the mirror to the target cluster.
type mirrorFlags struct {
	target        upstreamFlags
	topics        string
	excludeTopics string
	start         string
	dataDir       string
	feed          bool
}

func (f *mirrorFlags) register(fs *flag.FlagSet) {
	f.target.register(fs, "target-", "target")
	fs.StringVar(&f.topics, "topics", ".*", "regular expression of the topics to mirror (anchored)")
	fs.StringVar(&f.excludeTopics, "exclude-topics", "", "regular expression of topics not to mirror (anchored)")
	fs.BoolVar(&f.feed, "mirror-feed", true, "dual-write: batches produced through this proxy go to the mirror at once, with the offsets the source gave them, instead of waiting for the mirror's fetch (which still copies anything not fed)")
	fs.StringVar(&f.start, "mirror-start", "earliest", "where partitions new to the mirror start: earliest, latest or an RFC 3339 time")
	fs.StringVar(&f.dataDir, "data-dir", "kmigrate-data", "directory of this node's control-plane state: raft log and snapshots (offset maps, routes, membership), node id")
}

func (f *mirrorFlags) build(log *slog.Logger) (*replicate.Config, proxy.Upstream, error) {
	if f.target.bootstrap == "" {
		return nil, proxy.Upstream{}, nil // no target: pass-through proxy only
	}
	up, err := f.target.build("target")
	if err != nil {
		return nil, up, err
	}
	include, err := regexp.Compile("^(?:" + f.topics + ")$")
	if err != nil {
		return nil, up, fmt.Errorf("--topics: %w", err)
	}
	sel := replicate.Selection{Include: include}
	if f.excludeTopics != "" {
		if sel.Exclude, err = regexp.Compile("^(?:" + f.excludeTopics + ")$"); err != nil {
			return nil, up, fmt.Errorf("--exclude-topics: %w", err)
		}
	}
	var start replicate.StartPosition
	switch f.start {
	case "earliest":
		start = replicate.Earliest
	case "latest":
		start = replicate.Latest
	default:
		ts, err := time.Parse(time.RFC3339, f.start)
		if err != nil {
			return nil, up, fmt.Errorf("--mirror-start: %q is not earliest, latest or an RFC 3339 time", f.start)
		}
		start = replicate.At(ts)
	}
	return &replicate.Config{Target: kgoOpts(up), Topics: sel, Start: start, Logger: log}, up, nil
}

// currentMirror lets the proxy wait on whichever mirror instance runs now
// (runMirror replaces it after a failure).
type currentMirror struct {
	m atomic.Pointer[replicate.Mirror]
	// maps, when set, answers for partitions another node writes: their
	// mirror progress is in the replicated map.
	maps *raftmaps.Maps
}

// Feed passes records from the produce path to the running mirror, if any;
// a mirror being replaced misses them and fetches them instead.
func (c *currentMirror) Feed(topic string, partition int32, baseOffset, logAppendTime int64, records []byte) {
	if m := c.m.Load(); m != nil {
		m.Feed(topic, partition, baseOffset, logAppendTime, records)
	}
}

func (c *currentMirror) WaitMirrored(ctx context.Context, topic string, partition int32, offset int64) error {
	tp := replicate.Partition{Topic: topic, Partition: partition}
	if c.maps != nil && !c.maps.IsWriter(tp) {
		return c.maps.WaitMapped(ctx, tp, offset)
	}
	for {
		if m := c.m.Load(); m != nil {
			return m.WaitMirrored(ctx, replicate.Partition{Topic: topic, Partition: partition}, offset)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("mirror not running: %w", ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// runReverseMirror keeps the reverse mirror (target → source, for flipped
// topics) running until ctx ends, restarting it after a failure.
func runReverseMirror(ctx context.Context, cfg replicate.ReverseConfig, log *slog.Logger) {
	backoff := time.Second
	for ctx.Err() == nil {
		r, err := replicate.NewReverse(cfg)
		if err == nil {
			err = r.Run(ctx)
			r.Close()
		}
		if ctx.Err() != nil {
			return
		}
		log.Error("reverse mirror stopped; restarting", "err", err, "in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

// runMirror keeps the mirror running until ctx ends, restarting it after a
// failure; each restart resumes from the offset map without duplicates.
func runMirror(ctx context.Context, cfg replicate.Config, current *currentMirror, reg prometheus.Registerer, log *slog.Logger) {
	backoff := time.Second
	for ctx.Err() == nil {
		m, err := replicate.New(cfg)
		if err == nil {
			reg.MustRegister(m)
			current.m.Store(m)
			err = m.Run(ctx)
			current.m.Store(nil)
			reg.Unregister(m)
			m.Close()
		}
		if ctx.Err() != nil {
			return
		}
		log.Error("mirror stopped; restarting", "err", err, "retry_in", backoff)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

func runProxy(args []string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return serveProxy(ctx, args, nil)
}

// proxyOptions are the settings of "kmigrate proxy". The flag set built by
// newProxyFlags is the one table of them: flags, KMIGRATE_* variables and the
// YAML file all go through it (config.go).
type proxyOptions struct {
	source           upstreamFlags
	mirror           mirrorFlags
	cp               controlPlaneFlags
	listen           string
	advertise        string
	adminListen      string
	nodeID           int
	clientTLSCert    string
	clientTLSKey     string
	maxFrame         int
	maxInFlight      int
	maxBuffer        int64
	maxConnBuffer    int64
	maxConnsPerIP    int
	fetchLeaderHints bool
	logLevel         string
	logFormat        string
	produceMode      string
	adminToken       string
	configFile       string
	printConfig      bool

	// Client authentication (clientauth.go).
	clientTLSCA           string
	clientSASLMechanisms  string
	clientSASLCredentials string
	clientSASLPassThrough bool
}

func newProxyFlags() (*flag.FlagSet, *proxyOptions) {
	fs := flag.NewFlagSet("kmigrate proxy", flag.ContinueOnError)
	o := &proxyOptions{}
	fs.StringVar(&o.configFile, "config", "", "YAML file of settings, keys named as these flags; the command line and KMIGRATE_* variables win over it")
	fs.BoolVar(&o.printConfig, "print-config", false, "print the effective configuration as YAML (secrets masked) and exit")
	fs.StringVar(&o.listen, "listen", "127.0.0.1:9092", "client-facing address")
	fs.StringVar(&o.advertise, "advertise", "", "host:port clients are told to use (default: the listen address)")
	fs.StringVar(&o.adminListen, "admin-listen", "127.0.0.1:9644", "admin HTTP address (/metrics, /healthz, /v1/...; raft joins and reports between nodes); empty disables it")
	fs.IntVar(&o.nodeID, "node-id", 0, "broker id the proxy presents to clients")
	fs.StringVar(&o.clientTLSCert, "client-tls-cert", "", "PEM certificate: serve clients over TLS")
	fs.StringVar(&o.clientTLSKey, "client-tls-key", "", "PEM key for --client-tls-cert")
	fs.StringVar(&o.clientTLSCA, "client-tls-ca", "", "PEM CA bundle: clients must present a certificate it signed (mTLS; needs --client-tls-cert)")
	fs.StringVar(&o.clientSASLMechanisms, "client-sasl-mechanisms", "", "comma-separated SASL mechanisms clients must authenticate with: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 (needs --client-sasl-credentials); empty: clients do not authenticate")
	fs.StringVar(&o.clientSASLCredentials, "client-sasl-credentials", "", "YAML file of the users clients authenticate as: passwords or SCRAM hashes (kmigrate scram-credential)")
	fs.BoolVar(&o.clientSASLPassThrough, "client-sasl-passthrough", false, "PLAIN clients are checked by the source cluster and reach both clusters as themselves (their user and password, with the --source-/--target-sasl-mechanism); needs PLAIN in --client-sasl-mechanisms")
	fs.IntVar(&o.maxFrame, "max-frame-bytes", 100<<20, "largest request or response frame accepted")
	fs.IntVar(&o.maxInFlight, "max-in-flight", proxy.DefaultMaxInFlight, "outstanding requests per client connection before the proxy stops reading")
	fs.Int64Var(&o.maxBuffer, "max-buffer-bytes", proxy.DefaultMaxBufferBytes, "bytes all client requests in flight and their unwritten answers may hold; past it the proxy stops reading from clients")
	fs.Int64Var(&o.maxConnBuffer, "max-conn-buffer-bytes", proxy.DefaultMaxConnBufferBytes, "the same bound for one client connection")
	fs.IntVar(&o.maxConnsPerIP, "max-connections-per-ip", 1000, "open client connections allowed from one address (Kafka's max.connections.per.ip); 0: no limit")
	fs.BoolVar(&o.fetchLeaderHints, "fetch-leader-hints", false, "serve Fetch v16+ with KIP-951 leader hints (rewritten to name the proxy); off: Fetch up to v15, whose answers are cut through from the broker's socket without being read into memory")
	fs.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&o.logFormat, "log-format", "text", "text (key=value) or json, one object per line")
	fs.StringVar(&o.produceMode, "produce-mode", "async", "async: acknowledge after the source; sync: after the source and the target (needs --target-bootstrap)")
	fs.StringVar(&o.adminToken, "admin-token", "", "bearer token the admin API requires (default: $"+adminTokenEnv+"); required when --admin-listen is beyond loopback")
	o.source.register(fs, "source-", "source")
	o.mirror.register(fs)
	o.cp.register(fs)
	return fs, o
}

// serveProxy runs one kmigrate node (proxy, mirror, control plane, admin
// API) from command-line arguments until ctx ends. ready, if set, is called
// once clients and the admin API can connect (the demo drives a node this
// way).
func serveProxy(parent context.Context, args []string, ready func()) error {
	fs, o := newProxyFlags()
	origins, warnings, err := loadConfig(fs, args, os.LookupEnv, os.Environ())
	if err != nil {
		return err
	}
	if o.printConfig {
		for _, w := range warnings {
			fmt.Fprintln(os.Stderr, "warning:", w)
		}
		return writeEffectiveConfig(os.Stdout, fs, origins)
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	var handler slog.Handler
	switch o.logFormat {
	case "text":
		handler = slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})
	case "json":
		handler = slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level})
	default:
		return fmt.Errorf("--log-format must be text or json, got %q", o.logFormat)
	}
	log := slog.New(handler)
	slog.SetDefault(log)
	for _, w := range warnings {
		log.Warn(w)
	}
	if o.configFile != "" {
		log.Info("configuration file read", "path", o.configFile)
	}

	up, err := o.source.build("source")
	if err != nil {
		return err
	}
	if o.maxBuffer < 1<<20 || o.maxConnBuffer < 1<<20 {
		return fmt.Errorf("--max-buffer-bytes and --max-conn-buffer-bytes must be at least 1048576 (1 MiB), got %d and %d", o.maxBuffer, o.maxConnBuffer)
	}
	if o.maxFrame <= 0 || o.maxFrame > 1<<30 {
		return fmt.Errorf("--max-frame-bytes must be between 1 and 1073741824, got %d", o.maxFrame)
	}
	cfg := proxy.Config{
		Listen:              o.listen,
		Advertise:           o.advertise,
		NodeID:              int32(o.nodeID),
		MaxFrameBytes:       int32(o.maxFrame),
		MaxInFlight:         o.maxInFlight,
		Source:              up,
		MaxBufferBytes:      o.maxBuffer,
		MaxConnBufferBytes:  o.maxConnBuffer,
		MaxConnectionsPerIP: o.maxConnsPerIP,
		FetchLeaderHints:    o.fetchLeaderHints,
		Logger:              log,
	}
	if cfg.ClientTLS, cfg.ClientSASL, err = o.clientAuth(log); err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	cfg.Metrics = proxy.NewMetrics(reg)

	mirrorCfg, targetUp, err := o.mirror.build(log)
	if err != nil {
		return err
	}
	selection, err := o.mirror.selection()
	if err != nil {
		return err
	}
	current := &currentMirror{}
	switch o.produceMode {
	case "async":
	case "sync":
		if mirrorCfg == nil {
			return errors.New("--produce-mode sync needs --target-bootstrap: there is no target to wait for")
		}
		cfg.SyncProduce, cfg.Mirror = true, current
	default:
		return fmt.Errorf("--produce-mode must be async or sync, got %q", o.produceMode)
	}

	ctx, stop := context.WithCancel(parent)
	defer stop()

	// The admin listener exists before the control plane: its address is
	// recorded in the membership, and other nodes reach this one there.
	var adminLn net.Listener
	if o.adminListen != "" {
		if adminLn, err = net.Listen("tcp", o.adminListen); err != nil {
			return fmt.Errorf("--admin-listen %s: %w", o.adminListen, err)
		}
		defer adminLn.Close()
		if err := checkAdminExposure(adminLn, o.adminToken); err != nil {
			return err
		}
	}
	o.cp.adminToken = o.adminToken
	// The control plane (raft in --data-dir: a single self-bootstrapped node
	// unless --join) holds the offset maps, the routes and which node writes
	// each partition's mirror.
	cp, err := openControlPlane(o.cp, o.mirror.dataDir, advertisedAdmin(o.cp.adminAdvertise, adminLn), mirrorCfg != nil, log)
	if err != nil {
		return err
	}
	defer cp.store.Close()
	reg.MustRegister(controlPlaneMetrics{cp.store})
	cpHandler := &adminHandler{}
	cpHandler.set(cp.store.Handler())
	go cp.runAssigner(ctx, kgoOpts(up), selection, log)
	go cp.runFlipJanitor(ctx, o.cp.stuckAfter, log)

	// With a target, the offset map and the group routes exist before the
	// proxy starts: it serves groups on the target from them.
	var (
		fleet        atomic.Pointer[fleetGate]
		routes       groupRoutes
		cutover      *offsetsync.Cutover
		topicCutover *offsetsync.TopicCutover
		// Without a target the verify API answers that there is nothing
		// to compare.
		verifier = &verifyAPI{maps: mapReader{cp.maps}.OffsetMap, state: cp.store.State}
	)
	if mirrorCfg != nil {
		mirrorCfg.Source, mirrorCfg.Maps, mirrorCfg.Owns = kgoOpts(up), cp.maps, cp.maps.Owns
		current.maps = cp.maps
		routes = groupRoutes{store: cp.store.Forwarding()}
		cfg.Target, cfg.Routing, cfg.Maps, cfg.Covered = &targetUp, routes, mapReader{cp.maps}, current.Covered
		// The other nodes' moved members, once the gate that asks them
		// exists (it needs the proxy).
		cfg.PeerMovedMembers = func(ctx context.Context, group string) []proxy.MovedMember {
			if g := fleet.Load(); g != nil {
				return g.PeerMovedMembers(ctx, group)
			}
			return nil
		}
		if o.mirror.feed {
			cfg.Feed = current
		}
	}

	p, err := proxy.Start(ctx, cfg)
	if err != nil {
		return err
	}
	defer p.Close()

	var mirrorDone sync.WaitGroup
	if mirrorCfg != nil {
		mirrorDone.Add(1)
		go func() {
			defer mirrorDone.Done()
			runMirror(ctx, *mirrorCfg, current, reg, log)
		}()
		mirrorDone.Add(1)
		go func() {
			defer mirrorDone.Done()
			runReverseMirror(ctx, replicate.ReverseConfig{
				Source: kgoOpts(up), Target: kgoOpts(targetUp), Maps: cp.maps,
				Partitions: cp.maps.Flipped, Logger: log,
			}, log)
		}()
		// Stop and wait for the mirror before the store closes: it flushes its
		// map on exit; then hand its partitions over (defers run last first).
		defer handOverWriters(cp.store, log)
		defer func() { stop(); mirrorDone.Wait() }()
		log.Info("mirroring to the target", "target", o.mirror.target.bootstrap, "topics", o.mirror.topics, "exclude", o.mirror.excludeTopics, "data_dir", o.mirror.dataDir)

		srcClient, err := kgo.NewClient(kgoOpts(up)...)
		if err != nil {
			return err
		}
		defer srcClient.Close()
		dstClient, err := kgo.NewClient(kgoOpts(targetUp)...)
		if err != nil {
			return err
		}
		defer dstClient.Close()
		verifier.source, verifier.target = srcClient, dstClient
		gate := newFleetGate(p, cp.store, o.adminToken, log)
		fleet.Store(gate)
		cutover = &offsetsync.Cutover{
			Source: srcClient, Target: dstClient, Phases: routes, Gate: gate,
			Maps: mapReader{cp.maps}.OffsetMap, Covered: current.Covered, Log: log,
		}
		topicCutover = &offsetsync.TopicCutover{
			Source: srcClient, Target: dstClient, Topics: routes, Gate: gate,
			Maps: mapReader{cp.maps}.OffsetMap, Covered: current.Covered, Log: log,
			Verify: verifyBeforeFlip(verifier),
		}
	}

	flips := &flipLog{}
	if adminLn != nil {
		mux := http.NewServeMux()
		cpHandler.mount(mux)
		(&statusAPI{store: cp.store, mirror: mirrorOf(mirrorCfg, current), flips: flips, source: up.Bootstrap, target: targetUp.Bootstrap}).register(mux)
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		registerGate(mux, p, cp.store)
		mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
		// Profiles for operators chasing latency or CPU; the admin listener
		// is loopback by default.
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		verifier.register(mux)
		if cutover != nil {
			(&groupAPI{cutover: cutover, routes: routes, log: log, flips: flips}).register(mux)
			(&topicAPI{cutover: topicCutover, routes: routes, log: log, flips: flips}).register(mux)
		}
		srv := &http.Server{Addr: o.adminListen, Handler: requireToken(o.cp.adminToken, mux), ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := srv.Serve(adminLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("admin server stopped", "err", err)
			}
		}()
		defer srv.Close()
		log.Info("admin listening", "addr", adminLn.Addr().String())
	}
	if ready != nil {
		ready()
	}
	<-ctx.Done()
	log.Info("shutting down: no new connection or request; answering the requests in flight (at most 10 s)")
	grace, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p.Shutdown(grace)
	return nil
}

// handOverWriters releases the mirror partitions this node writes, once its
// mirror has stopped, so that the leader gives them to a live writer at
// once instead of after the 4 s that declare this node dead.
func handOverWriters(store *raftstore.Store, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	released := 0
	for _, w := range store.State().Writers() {
		if w.Node != store.ID() {
			continue
		}
		res, err := store.Forwarding().Apply(ctx, raftstore.ReleaseWriter{TopicPartition: w.TopicPartition, Node: w.Node, Epoch: w.Epoch})
		if err == nil {
			err = res.Err
		}
		if err != nil {
			log.Warn("could not hand over a mirror partition; the leader reassigns it once this node is declared dead", "topic", w.Topic, "partition", w.Partition, "err", err)
			continue
		}
		released++
	}
	if released > 0 {
		log.Info("mirror partitions handed over", "partitions", released)
	}
}
