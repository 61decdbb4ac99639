package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"time"

	"github.com/kmigrate/kmigrate/raftstore"
	"github.com/kmigrate/kmigrate/replicate"
	"github.com/kmigrate/kmigrate/replicate/raftmaps"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// controlPlaneFlags configure this node's membership of the raft control
// plane (DESIGN.md, "Control plane"). With none of them, the node is a
// single-voter cluster in --data-dir that bootstraps itself.
type controlPlaneFlags struct {
	raftAddr       string
	raftAdvertise  string
	join           string
	voter          bool
	nodeID         string
	adminAdvertise string
	adminToken     string // sent to other nodes' admin servers
	stuckAfter     time.Duration
}

func (f *controlPlaneFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.raftAddr, "raft-addr", "", "HOST:PORT raft listens on (default: 127.0.0.1 and a free port, remembered in --data-dir)")
	fs.StringVar(&f.raftAdvertise, "raft-advertise", "", "HOST:PORT other nodes dial for raft (default: --raft-addr; required when it listens on all interfaces)")
	fs.StringVar(&f.join, "join", "", "admin address (HOST:PORT) of any node of an existing cluster, to join it on first start (default: bootstrap a new single-node cluster)")
	fs.BoolVar(&f.voter, "raft-voter", false, "join as a raft voter (control-plane node); otherwise a non-voter that applies the log and reads locally (sidecar)")
	fs.StringVar(&f.nodeID, "raft-node-id", "", "this node's id in the cluster (default: hostname plus a random suffix, remembered in --data-dir)")
	fs.StringVar(&f.adminAdvertise, "admin-advertise", "", "HOST:PORT other nodes reach this node's admin server at (default: the --admin-listen address)")
	fs.DurationVar(&f.stuckAfter, "stuck-flip-after", 30*time.Second, "the raft leader reverts a topic flip still half-done after this long (a node died mid-flip); groups after 6 times as long")
}

// Timing of the fleet's failure detection. A node reports its applied index
// at least every reportRefresh; the leader declares it dead after
// deadAfter without a report and moves its partitions; a writer that has not
// heard from the leader for writerLease stops writing first.
const (
	reportRefresh = time.Second
	deadAfter     = 4 * time.Second
	writerLease   = 2 * time.Second
)

// nodeIdentity is what a data directory remembers of its node, so that a
// restart without flags is the same member at the same address.
type nodeIdentity struct {
	ID       string `json:"id"`
	RaftAddr string `json:"raft_addr"`
}

const identityFile = "node.json"

// controlPlane is this node's raft store and what runs on it.
type controlPlane struct {
	store *raftstore.Store
	maps  *raftmaps.Maps
}

// adminHandler lets the admin server start before the store exists (a
// joining node must be reachable as soon as it is a member).
type adminHandler struct{ h atomic.Pointer[http.Handler] }

func (a *adminHandler) set(h http.Handler) { a.h.Store(&h) }

func (a *adminHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h := a.h.Load(); h != nil {
		(*h).ServeHTTP(w, r)
		return
	}
	http.Error(w, "control plane starting", http.StatusServiceUnavailable)
}

// mount registers the control plane's endpoints on the admin mux.
func (a *adminHandler) mount(mux *http.ServeMux) {
	for _, p := range []string{"/v1/raftstore/", "/v1/nodes", "/v1/changes", "/v1/changes/", "/v1/writers"} {
		mux.Handle(p, a)
	}
}

// openControlPlane opens (or creates) the node in dataDir/raft. adminAddr is
// the address other nodes reach this node's admin server at ("" without
// one: then the node can only be a cluster of its own). writer says whether
// this node runs a mirror, so that the leader may give it partitions.
func openControlPlane(f controlPlaneFlags, dataDir, adminAddr string, writer bool, log *slog.Logger) (*controlPlane, error) {
	if err := os.MkdirAll(dataDir, 0o750); err != nil {
		return nil, fmt.Errorf("--data-dir: %w", err)
	}
	if old, err := os.Stat(filepath.Join(dataDir, "offset-maps.jsonl")); err == nil && old.Size() > 0 {
		log.Warn("ignoring offset-maps.jsonl in the data dir: offset maps now live in raft (data-dir/raft)", "dir", dataDir)
	}
	id, err := loadIdentity(dataDir)
	if err != nil {
		return nil, err
	}
	raftDir := filepath.Join(dataDir, "raft")
	_, statErr := os.Stat(filepath.Join(raftDir, "raft.db"))
	existing := statErr == nil
	switch {
	case f.nodeID != "" && existing && id.ID != "" && f.nodeID != id.ID:
		return nil, fmt.Errorf("--raft-node-id %s: %s holds the raft state of node %s", f.nodeID, dataDir, id.ID)
	case f.nodeID != "":
		id.ID = f.nodeID
	case id.ID == "":
		id.ID = newNodeID()
	}
	raftAddr := f.raftAddr
	if raftAddr == "" {
		raftAddr = id.RaftAddr
	}
	if raftAddr == "" {
		raftAddr = "127.0.0.1:0"
	}
	if f.join != "" && adminAddr == "" {
		return nil, errors.New("--join needs --admin-listen: nodes talk to each other through their admin servers")
	}
	if f.join != "" && f.join == adminAddr {
		// Replicas of a StatefulSet share their arguments (and the image has
		// no shell to vary them): the one whose --join names itself is the
		// first member and bootstraps; the others join it.
		log.Info("--join names this node: bootstrapping the cluster", "join", f.join)
		f.join = ""
	}
	store, err := raftstore.Open(raftstore.Config{
		NodeID: id.ID, DataDir: raftDir, RaftAddr: raftAddr, AdvertiseAddr: f.raftAdvertise,
		AdminAddr: adminAddr, Voter: f.voter, Writer: writer, Join: f.join,
		Logger: log, ReportRefresh: reportRefresh, Transport: newBearerTransport(f.adminToken),
	})
	if err != nil {
		return nil, err
	}
	id.RaftAddr = raftAddr
	if f.raftAdvertise == "" {
		id.RaftAddr = store.RaftAddr() // the port actually bound
	}
	if err := saveIdentity(dataDir, id); err != nil {
		_ = store.Close()
		return nil, err
	}
	log.Info("control plane", "node", id.ID, "raft_addr", store.RaftAddr(), "voter", f.voter || (f.join == "" && !existing),
		"join", f.join, "data_dir", raftDir)
	return &controlPlane{store: store, maps: raftmaps.New(store, writerLease)}, nil
}

func loadIdentity(dataDir string) (nodeIdentity, error) {
	var id nodeIdentity
	b, err := os.ReadFile(filepath.Join(dataDir, identityFile))
	if errors.Is(err, os.ErrNotExist) {
		return id, nil
	}
	if err == nil {
		err = json.Unmarshal(b, &id)
	}
	if err != nil {
		return id, fmt.Errorf("node identity in %s: %w", dataDir, err)
	}
	return id, nil
}

func saveIdentity(dataDir string, id nodeIdentity) error {
	b, _ := json.MarshalIndent(id, "", "  ")
	tmp := filepath.Join(dataDir, identityFile+".tmp")
	if err := os.WriteFile(tmp, append(b, '\n'), 0o640); err != nil {
		return fmt.Errorf("save node identity: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(dataDir, identityFile)); err != nil {
		return fmt.Errorf("save node identity: %w", err)
	}
	return nil
}

func newNodeID() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "kmigrate"
	}
	if i := strings.IndexByte(host, '.'); i > 0 {
		host = host[:i]
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return host + "-" + hex.EncodeToString(b)
}

// runAssigner runs the leader's liveness and writer assignment until ctx
// ends. Partitions come from listing the source with the mirror's topic
// selection, so a leader without a mirror of its own still assigns them.
// runFlipJanitor reverts, on the leader, the flips no live cutover is
// driving any more, so that held produces and JoinGroups are released.
// The default bound (--stuck-flip-after 30 s; groups 3 min) is well past a
// live cutover's own (produces held 10 s, a group drained 30 s).
func (cp *controlPlane) runFlipJanitor(ctx context.Context, after time.Duration, log *slog.Logger) {
	if after <= 0 {
		return
	}
	tick := time.NewTicker(min(5*time.Second, after/2))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if !cp.store.IsLeader() {
			continue
		}
		for _, c := range raftstore.StuckFlips(cp.store.State(), time.Now(), after, 6*after) {
			actx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, err := cp.store.Apply(actx, c)
			cancel()
			if err != nil {
				log.Warn("could not revert a flip left half-done", "command", fmt.Sprintf("%+v", c), "err", err)
				continue
			}
			log.Warn("reverted a flip left half-done (its node died or gave up mid-flip)", "command", fmt.Sprintf("%+v", c))
		}
	}
}

func (cp *controlPlane) runAssigner(ctx context.Context, source []kgo.Opt, sel replicate.Selection, log *slog.Logger) {
	cl, err := kgo.NewClient(source...)
	if err != nil {
		log.Error("writer assignment disabled: source client", "err", err)
		return
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	cp.store.RunAssigner(ctx, raftstore.AssignerConfig{
		DeadAfter: deadAfter,
		Logger:    log,
		Partitions: func(ctx context.Context) ([]raftstore.TopicPartition, error) {
			topics, err := adm.ListTopics(ctx)
			if err != nil {
				return nil, err
			}
			var out []raftstore.TopicPartition
			for _, t := range topics.Sorted() {
				if t.IsInternal || t.Err != nil || !sel.Matches(t.Topic) {
					continue
				}
				for p := range t.Partitions {
					out = append(out, raftstore.TopicPartition{Topic: t.Topic, Partition: p})
				}
			}
			return out, nil
		},
	})
}

// advertisedAdmin is the admin address to record in the membership.
func advertisedAdmin(flagValue string, ln net.Listener) string {
	if flagValue != "" {
		return flagValue
	}
	if ln == nil {
		return ""
	}
	return ln.Addr().String()
}

// selection is the mirror's topic selection, which the leader needs to
// assign writers even when it does not mirror itself.
func (f *mirrorFlags) selection() (replicate.Selection, error) {
	var sel replicate.Selection
	var err error
	if sel.Include, err = regexp.Compile("^(?:" + f.topics + ")$"); err != nil {
		return sel, fmt.Errorf("--topics: %w", err)
	}
	if f.excludeTopics != "" {
		if sel.Exclude, err = regexp.Compile("^(?:" + f.excludeTopics + ")$"); err != nil {
			return sel, fmt.Errorf("--exclude-topics: %w", err)
		}
	}
	return sel, nil
}
