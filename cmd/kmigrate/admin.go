package main

import (
	"crypto/subtle"
	"embed"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/kmigrate/kmigrate/offsetsync"
	"github.com/kmigrate/kmigrate/raftstore"
	"github.com/kmigrate/kmigrate/replicate"
)

// adminTokenEnv holds the admin API's bearer token when --admin-token is not
// given (for the proxy and for the CLI commands that call it).
const adminTokenEnv = "KMIGRATE_ADMIN_TOKEN"

// adminToken is the flag's value, else the environment's.
func adminToken(flagValue string) string {
	if flagValue != "" {
		return flagValue
	}
	return os.Getenv(adminTokenEnv)
}

// checkAdminExposure refuses an admin listener reachable beyond loopback
// without a token: it carries cutovers, raft joins and reports.
func checkAdminExposure(ln net.Listener, token string) error {
	if token != "" {
		return nil
	}
	if a, ok := ln.Addr().(*net.TCPAddr); ok && a.IP.IsLoopback() {
		return nil
	}
	return fmt.Errorf("--admin-listen %s is reachable beyond loopback: set --admin-token (or %s) to protect the admin API, or listen on 127.0.0.1",
		ln.Addr(), adminTokenEnv)
}

// requireToken guards h with "Authorization: Bearer <token>" when token is
// set. The status page's own files (GET / and /ui/) carry no data and are
// served without it: the page sends the token with its API calls.
func requireToken(token string, h http.Handler) http.Handler {
	if token == "" {
		return h
	}
	want := []byte("Bearer " + token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && (r.URL.Path == "/" || strings.HasPrefix(r.URL.Path, "/ui/")) {
			h.ServeHTTP(w, r)
			return
		}
		if subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="kmigrate"`)
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "missing or wrong bearer token (--admin-token / " + adminTokenEnv + ")"})
			return
		}
		h.ServeHTTP(w, r)
	})
}

// bearerTransport adds the token to requests to other nodes' admin servers.
type bearerTransport struct {
	token string
	base  *http.Transport
}

func newBearerTransport(token string) http.RoundTripper {
	if token == "" {
		return nil
	}
	return &bearerTransport{token: token, base: &http.Transport{}}
}

func (t *bearerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+t.token)
	return t.base.RoundTrip(r)
}

func (t *bearerTransport) CloseIdleConnections() { t.base.CloseIdleConnections() }

// adminClient calls a node's admin API with the token, for the CLI.
type adminClient struct {
	addr  string
	token string
	http  *http.Client
}

func newAdminClient(addr, token string) *adminClient {
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	return &adminClient{addr: strings.TrimRight(addr, "/"), token: adminToken(token), http: &http.Client{}}
}

// postMove runs a cutover or rollback through a node's admin API and
// decodes its report; an error answer comes back as an error carrying the
// answer's body, which is also returned as it is (for --json).
func postMove[R any](admin, token, path string) (rep R, body []byte, err error) {
	resp, err := newAdminClient(admin, token).do(http.MethodPost, path)
	if err != nil {
		return rep, nil, err
	}
	defer resp.Body.Close()
	body, _ = io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		return rep, body, fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	return rep, body, json.Unmarshal(body, &rep)
}

// routeField reads one field of a route (GET /v1/groups/G or
// /v1/topics/T): its phase or primary.
func routeField(admin, token, path, field string) (string, bool) {
	resp, err := newAdminClient(admin, token).do(http.MethodGet, path)
	if err != nil {
		return "", false
	}
	defer resp.Body.Close()
	var route map[string]any
	if json.NewDecoder(resp.Body).Decode(&route) != nil {
		return "", false
	}
	v, ok := route[field].(string)
	return v, ok
}

func (c *adminClient) do(method, path string) (*http.Response, error) {
	req, err := http.NewRequest(method, c.addr+path, nil)
	if err != nil {
		return nil, err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err == nil && resp.StatusCode == http.StatusUnauthorized {
		resp.Body.Close()
		if c.token == "" {
			return nil, fmt.Errorf("%s: 401 Unauthorized: the node wants a token (--admin-token or %s)", c.addr, adminTokenEnv)
		}
		return nil, fmt.Errorf("%s: 401 Unauthorized: the node refused the token", c.addr)
	}
	return resp, err
}

// flip is one cutover or rollback run through this node's API.
type flip struct {
	Group     string    `json:"group,omitempty"`
	Topic     string    `json:"topic,omitempty"`
	Verb      string    `json:"verb"` // cutover or rollback
	From      string    `json:"from"`
	To        string    `json:"to"`
	Phase     string    `json:"phase"`
	StartedAt time.Time `json:"started_at"`
	TookMs    int64     `json:"took_ms"`
	DrainMs   int64     `json:"drain_ms"`
	Members   int       `json:"members"`
	Rejoined  int       `json:"rejoined"`
	Already   bool      `json:"already_done,omitempty"`
	Error     string    `json:"error,omitempty"`
}

// flipLog keeps the last flips run through this node, newest first.
type flipLog struct {
	mu    sync.Mutex
	flips []flip
}

const flipLogSize = 20

func (l *flipLog) add(verb string, start time.Time, rep offsetsync.Report, err error) {
	if l == nil {
		return
	}
	f := flip{Group: rep.Group, Verb: verb, From: rep.From, To: rep.To, Phase: rep.Phase, StartedAt: start,
		TookMs: time.Since(start).Milliseconds(), DrainMs: rep.Drain.Milliseconds(), Members: rep.Members,
		Rejoined: rep.Rejoined, Already: rep.AlreadyDone}
	if err != nil {
		f.Error = err.Error()
	}
	l.push(f)
}

func (l *flipLog) push(f flip) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.flips = slices.Insert(l.flips, 0, f)
	if len(l.flips) > flipLogSize {
		l.flips = l.flips[:flipLogSize]
	}
}

func (l *flipLog) list() []flip {
	if l == nil {
		return []flip{}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]flip{}, l.flips...)
}

// Status is the answer of GET /v1/status.
type Status struct {
	Node         string          `json:"node"`
	Leader       string          `json:"leader"`
	AppliedIndex uint64          `json:"applied_index"`
	Time         time.Time       `json:"time"`
	Clusters     StatusClusters  `json:"clusters"`
	Nodes        []StatusNode    `json:"nodes"`
	Topics       []StatusTopic   `json:"topics"`
	Groups       []StatusGroup   `json:"groups"`
	Flips        []flip          `json:"flips"`
	Mirror       StatusMirrorRun `json:"mirror"`
}

// StatusClusters names the clusters this node connects.
type StatusClusters struct {
	Source []string `json:"source"`
	Target []string `json:"target"` // empty: pass-through proxy, no mirror
}

// StatusMirrorRun says whether this node mirrors and whether its mirror runs now.
type StatusMirrorRun struct {
	Configured bool `json:"configured"`
	Running    bool `json:"running"`
}

// StatusNode is a member of the control plane.
type StatusNode struct {
	ID         string    `json:"id"`
	Address    string    `json:"address"` // admin address
	RaftAddr   string    `json:"raft_addr"`
	Voter      bool      `json:"voter"`
	Writer     bool      `json:"writer"`
	Applied    uint64    `json:"applied_index"`
	ReportedAt time.Time `json:"reported_at"`
	Live       bool      `json:"live"`
	Leader     bool      `json:"leader"`
}

// StatusTopic is a mirrored topic. Lag sums (records) and maxima (ms) are
// over the partitions whose lag this node knows: those it writes.
type StatusTopic struct {
	Topic      string            `json:"topic"`
	Producers  string            `json:"producers"` // producer primary: source, draining, target, rolling-back
	LagRecords int64             `json:"lag_records"`
	LagMs      int64             `json:"lag_ms"`
	Partitions []StatusPartition `json:"partitions"`
}

// StatusPartition is one mirrored partition. The lag fields are null for a
// partition another node writes (ask that node).
type StatusPartition struct {
	Partition  int32  `json:"partition"`
	Writer     string `json:"writer"` // node writing its mirror ("" unassigned)
	Local      bool   `json:"local"`  // this node writes it
	NextSource *int64 `json:"next_source_offset"`
	LastStable *int64 `json:"source_last_stable_offset"`
	LagRecords *int64 `json:"lag_records"`
	LagMs      *int64 `json:"lag_ms"`
	Copied     *int64 `json:"copied"`
	Segments   *int   `json:"map_segments"`
}

// StatusGroup is a consumer group the control plane has routed.
type StatusGroup struct {
	Group     string    `json:"group"`
	Phase     string    `json:"phase"`
	Epoch     uint64    `json:"epoch"`
	ChangedAt time.Time `json:"changed_at"`
	// Complete: every live node has applied the group's last change.
	Complete bool `json:"complete"`
}

// statusAPI serves GET /v1/status from the control plane's state and the
// mirror running on this node.
type statusAPI struct {
	store  *raftstore.Store
	mirror *currentMirror // nil without a target
	flips  *flipLog
	source []string
	target []string
}

func (a *statusAPI) register(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, a.status())
	})
	mux.Handle("GET /{$}", http.HandlerFunc(serveIndex))
	sub, _ := fs.Sub(uiFiles, "ui")
	mux.Handle("GET /ui/", http.StripPrefix("/ui/", http.FileServerFS(sub)))
}

func (a *statusAPI) status() Status {
	st := a.store.State()
	leader, _ := a.store.Leader()
	out := Status{
		Node: a.store.ID(), Leader: leader, AppliedIndex: st.AppliedIndex(), Time: time.Now().UTC(),
		Clusters: StatusClusters{Source: nonNil(a.source), Target: nonNil(a.target)},
		Nodes:    []StatusNode{}, Topics: []StatusTopic{}, Groups: []StatusGroup{}, Flips: a.flips.list(),
	}
	for _, n := range st.Nodes() {
		out.Nodes = append(out.Nodes, StatusNode{ID: n.ID, Address: n.AdminAddr, RaftAddr: n.RaftAddr, Voter: n.Voter,
			Writer: n.Writer, Applied: n.Applied, ReportedAt: n.ReportedAt, Live: !n.Dead, Leader: n.ID == leader})
	}
	for _, g := range st.Groups() {
		out.Groups = append(out.Groups, StatusGroup{Group: g.Group, Phase: string(g.Phase), Epoch: g.Epoch,
			ChangedAt: g.ChangedAt, Complete: raftstore.ChangeProgress(st, g.ChangedIndex).Complete})
	}

	// Partitions: those this node mirrors (with lag) and those the control
	// plane assigns to writers (lag known by their writer).
	local := map[raftstore.TopicPartition]replicate.PartitionStatus{}
	if a.mirror != nil {
		out.Mirror.Configured = true
		if m := a.mirror.m.Load(); m != nil {
			out.Mirror.Running = true
			for _, p := range m.Status() {
				local[raftstore.TopicPartition{Topic: p.Topic, Partition: p.Partition}] = p
			}
		}
	}
	parts := map[raftstore.TopicPartition]*StatusPartition{}
	for _, wo := range st.Writers() {
		parts[wo.TopicPartition] = &StatusPartition{Partition: wo.Partition, Writer: wo.Node}
	}
	for tp, p := range local {
		sp := parts[tp]
		if sp == nil {
			sp = &StatusPartition{Partition: tp.Partition, Writer: a.store.ID()}
			parts[tp] = sp
		}
		sp.Local = true
		sp.NextSource, sp.LastStable, sp.LagRecords, sp.LagMs = &p.NextSource, &p.LastStable, &p.Lag, &p.LagMs
		sp.Copied, sp.Segments = &p.Copied, &p.Segments
	}
	byTopic := map[string]*StatusTopic{}
	keys := make([]raftstore.TopicPartition, 0, len(parts))
	for tp := range parts {
		keys = append(keys, tp)
	}
	slices.SortFunc(keys, func(x, y raftstore.TopicPartition) int {
		if c := strings.Compare(x.Topic, y.Topic); c != 0 {
			return c
		}
		return int(x.Partition) - int(y.Partition)
	})
	for _, tp := range keys {
		t := byTopic[tp.Topic]
		if t == nil {
			r, _ := st.Topic(tp.Topic)
			producers := string(r.Primary)
			if producers == "" {
				producers = string(raftstore.ProducerSource)
			}
			t = &StatusTopic{Topic: tp.Topic, Producers: producers}
			byTopic[tp.Topic] = t
		}
		p := parts[tp]
		if p.LagRecords != nil {
			t.LagRecords += *p.LagRecords
			t.LagMs = max(t.LagMs, *p.LagMs)
		}
		t.Partitions = append(t.Partitions, *p)
	}
	for _, tp := range keys {
		if t := byTopic[tp.Topic]; t != nil {
			out.Topics = append(out.Topics, *t)
			delete(byTopic, tp.Topic)
		}
	}
	return out
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

//go:embed ui
var uiFiles embed.FS

func serveIndex(w http.ResponseWriter, r *http.Request) {
	b, err := uiFiles.ReadFile("ui/index.html")
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Security-Policy", "default-src 'self'; style-src 'self' 'unsafe-inline'; script-src 'self'")
	w.Write(b)
}

// mirrorOf is the running mirror for the status, nil without a target.
func mirrorOf(cfg *replicate.Config, current *currentMirror) *currentMirror {
	if cfg == nil {
		return nil
	}
	return current
}
