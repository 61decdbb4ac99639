package raftstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"
)

// ErrNotLeader is wrapped by the errors of calls that only the leader serves.
// errors.As with *NotLeaderError gives the leader to go to instead.
var ErrNotLeader = errors.New("raftstore: not the leader")

// NotLeaderError says which node leads, when this node knows.
type NotLeaderError struct {
	LeaderID        string // "" when no leader is known
	LeaderRaftAddr  string
	LeaderAdminAddr string // from the leader's registration, when known
	// Cause is raft's error when leadership was lost during the call: the
	// command may then still have been committed.
	Cause error
}

func (e *NotLeaderError) Error() string {
	msg := "raftstore: not the leader"
	if e.LeaderID != "" {
		msg += fmt.Sprintf(" (leader %s at %s", e.LeaderID, e.LeaderRaftAddr)
		if e.LeaderAdminAddr != "" {
			msg += ", admin " + e.LeaderAdminAddr
		}
		msg += ")"
	} else {
		msg += " (no leader known)"
	}
	if e.Cause != nil {
		msg += ": " + e.Cause.Error()
	}
	return msg
}

func (e *NotLeaderError) Unwrap() []error {
	if e.Cause != nil {
		return []error{ErrNotLeader, e.Cause}
	}
	return []error{ErrNotLeader}
}

// Config configures a Store.
type Config struct {
	// NodeID names the node in the cluster; it must stay the same across
	// restarts with the same DataDir.
	NodeID string
	// DataDir holds the raft log and stable store (raft.db, bolt) and the
	// snapshots (snapshots/).
	DataDir string
	// RaftAddr is the TCP address raft listens on ("127.0.0.1:0" picks a
	// port). AdvertiseAddr, if set, is the address other nodes dial; it is
	// required when RaftAddr listens on all interfaces.
	RaftAddr      string
	AdvertiseAddr string
	// AdminAddr is the HTTP address where this node serves Handler, recorded
	// in the membership so that other nodes can send joins and reports to
	// the leader. A node without one can still apply and serve reads, but
	// followers cannot report to it while it leads.
	AdminAddr string
	// Voter makes the node a raft voter when it joins; otherwise it is a
	// non-voter that applies the log and serves local reads.
	Voter bool
	// Writer registers the node as one that runs a mirror, so that the
	// Assigner may give it partitions to write.
	Writer bool
	// Join is the admin (HTTP) address of any node of an existing cluster.
	// A node with an empty DataDir and no Join bootstraps a new cluster with
	// itself as the only voter (the embedded default). Join is used only when
	// DataDir is empty: a restarted node is already a member.
	Join string
	// Logger receives the store's logs and raft's; nil discards them.
	Logger *slog.Logger
	// Transport, if set, carries the joins, reports and forwarded applies
	// to other nodes' admin servers (e.g. adding their bearer token).
	Transport http.RoundTripper
	// RaftLogLevel is the lowest level of raft's own messages that reach
	// Logger; nil means slog.LevelWarn.
	RaftLogLevel slog.Leveler
	// ApplyTimeout bounds Apply, AddNode and friends when their context has
	// no deadline; default 10s.
	ApplyTimeout time.Duration
	// JoinTimeout bounds Open's join attempts; default 30s.
	JoinTimeout time.Duration
	// ReportInterval is how often the node checks whether it has applied a
	// change it has not reported yet (default 200ms; negative: never report).
	// ReportRefresh forces a report that often even without change, so the
	// leader sees the node alive (default 10s).
	ReportInterval time.Duration
	ReportRefresh  time.Duration
	// Tune, if set, may change the raft configuration before use (tests
	// shorten the timeouts).
	Tune func(*raft.Config)
}

var _ Applier = (*Store)(nil)

// Store is a node of the replicated state: a hashicorp/raft member whose FSM
// holds the routing table, the offset maps, writer ownership and membership.
type Store struct {
	cfg   Config
	log   *slog.Logger
	fsm   *fsm
	raft  *raft.Raft
	trans *raft.NetworkTransport
	bolt  *raftboltdb.BoltStore
	http  *http.Client

	// ready is set once this node, as leader, has applied everything
	// committed before its term (a barrier), so that VerifiedRead cannot
	// read state older than a previous leader's last commit.
	ready atomic.Bool

	stop      chan struct{}
	stopCtx   context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// Open starts a node: it opens or creates the data directory, starts raft,
// and bootstraps or joins as Config says.
func Open(cfg Config) (*Store, error) {
	if cfg.NodeID == "" || cfg.DataDir == "" || cfg.RaftAddr == "" {
		return nil, errors.New("raftstore: NodeID, DataDir and RaftAddr are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.RaftLogLevel == nil {
		cfg.RaftLogLevel = slog.LevelWarn
	}
	if cfg.ApplyTimeout <= 0 {
		cfg.ApplyTimeout = 10 * time.Second
	}
	if cfg.JoinTimeout <= 0 {
		cfg.JoinTimeout = 30 * time.Second
	}
	if cfg.ReportInterval == 0 {
		cfg.ReportInterval = 200 * time.Millisecond
	}
	if cfg.ReportRefresh <= 0 {
		cfg.ReportRefresh = 10 * time.Second
	}
	log := cfg.Logger.With("node", cfg.NodeID)
	s := &Store{
		cfg:  cfg,
		log:  log,
		fsm:  newFSM(log),
		stop: make(chan struct{}),
		http: &http.Client{Transport: &http.Transport{}, Timeout: 10 * time.Second},
	}
	if cfg.Transport != nil {
		s.http.Transport = cfg.Transport
	}
	s.stopCtx, s.cancel = context.WithCancel(context.Background())
	if err := s.start(); err != nil {
		_ = s.Close()
		return nil, err
	}
	return s, nil
}

// start opens what Open needs; on error, Close releases whatever it opened.
func (s *Store) start() (err error) {
	cfg := s.cfg
	hl := newHCLog(cfg.Logger.With("node", cfg.NodeID), cfg.RaftLogLevel)

	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return fmt.Errorf("raftstore: create data dir: %w", err)
	}
	s.bolt, err = openBolt(filepath.Join(cfg.DataDir, "raft.db"))
	if err != nil {
		return fmt.Errorf("raftstore: open log store %s: %w", cfg.DataDir, err)
	}
	// The cache serves the recent entries that followers fetch and that
	// the FSM applies without reading bolt back.
	logs, err := raft.NewLogCache(512, s.bolt)
	if err != nil {
		return fmt.Errorf("raftstore: log cache: %w", err)
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.DataDir, 2, hl)
	if err != nil {
		return fmt.Errorf("raftstore: snapshot store %s: %w", cfg.DataDir, err)
	}

	var advertise net.Addr
	if cfg.AdvertiseAddr != "" {
		if advertise, err = net.ResolveTCPAddr("tcp", cfg.AdvertiseAddr); err != nil {
			return fmt.Errorf("raftstore: advertise address: %w", err)
		}
	}
	s.trans, err = raft.NewTCPTransportWithLogger(cfg.RaftAddr, advertise, 3, 10*time.Second, hl)
	if err != nil {
		return fmt.Errorf("raftstore: raft transport on %s: %w", cfg.RaftAddr, err)
	}

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.NodeID)
	rc.Logger = hl
	if cfg.Tune != nil {
		cfg.Tune(rc)
	}
	if err := raft.ValidateConfig(rc); err != nil {
		return fmt.Errorf("raftstore: raft config: %w", err)
	}
	existing, err := raft.HasExistingState(logs, s.bolt, snaps)
	if err != nil {
		return fmt.Errorf("raftstore: inspect %s: %w", cfg.DataDir, err)
	}
	s.raft, err = raft.NewRaft(rc, s.fsm, logs, s.bolt, snaps, s.trans)
	if err != nil {
		return fmt.Errorf("raftstore: start raft: %w", err)
	}

	switch {
	case existing:
		s.log.Info("raftstore: restarting from data dir", "dir", cfg.DataDir,
			"last_index", s.raft.LastIndex())
	case cfg.Join == "":
		// Alone and new: bootstrap a one-voter cluster. Whatever Voter
		// says, the only member of a cluster must vote.
		boot := raft.Configuration{Servers: []raft.Server{{
			Suffrage: raft.Voter, ID: rc.LocalID, Address: s.trans.LocalAddr(),
		}}}
		if err := s.raft.BootstrapCluster(boot).Error(); err != nil {
			return fmt.Errorf("raftstore: bootstrap: %w", err)
		}
		s.log.Info("raftstore: bootstrapped a new cluster", "raft_addr", s.trans.LocalAddr())
	}

	s.wg.Add(1)
	go s.leaderLoop()
	if cfg.ReportInterval > 0 {
		s.wg.Add(1)
		go s.reportLoop()
	}

	if !existing && cfg.Join != "" {
		ctx, cancel := context.WithTimeout(s.stopCtx, cfg.JoinTimeout)
		defer cancel()
		if err := s.join(ctx); err != nil {
			return err
		}
	}
	return nil
}

// Close stops the node: raft, the transport, the loops and the log store.
// It does not leave the cluster: a voter that goes away for good should be
// removed with RemoveNode on the leader.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		// Stop the loops' waits first, then raft (which fails the futures
		// the loops may be blocked on), then wait for the loops.
		close(s.stop)
		s.cancel()
		var errs []error
		if s.raft != nil {
			errs = append(errs, s.raft.Shutdown().Error())
		}
		s.wg.Wait()
		if s.trans != nil {
			// Closing the pooled outgoing connections lets the peers'
			// handlers of those connections end now, not at their next read.
			s.trans.CloseStreams()
			errs = append(errs, s.trans.Close())
		}
		if s.bolt != nil {
			errs = append(errs, s.bolt.Close())
		}
		s.http.CloseIdleConnections()
		if err := errors.Join(errs...); err != nil {
			s.closeErr = fmt.Errorf("raftstore: close: %w", err)
		}
	})
	return s.closeErr
}

// ID is this node's id.
func (s *Store) ID() string { return s.cfg.NodeID }

// RaftAddr is the address other nodes reach this node's raft at.
func (s *Store) RaftAddr() string { return string(s.trans.LocalAddr()) }

// State is the local state of this node, served without contacting the
// leader: it may lag the leader by the Staleness of this node.
func (s *Store) State() Reader { return s.fsm }

// Dump returns a deep copy of the local state.
func (s *Store) Dump() Dump { return s.fsm.Dump() }

// IsLeader reports whether this node currently leads.
func (s *Store) IsLeader() bool { return s.raft.State() == raft.Leader }

// Leader returns the current leader's id and raft address, "" when none is
// known.
func (s *Store) Leader() (id, raftAddr string) {
	addr, lid := s.raft.LeaderWithID()
	return string(lid), string(addr)
}

func (s *Store) notLeader(cause error) error {
	e := &NotLeaderError{Cause: cause}
	e.LeaderID, e.LeaderRaftAddr = s.Leader()
	if n, ok := s.fsm.Node(e.LeaderID); ok {
		e.LeaderAdminAddr = n.AdminAddr
	}
	return e
}

// timeout turns ctx's deadline into raft's timeout argument.
func (s *Store) timeout(ctx context.Context) (time.Duration, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	select {
	case <-s.stop:
		return 0, ErrClosed
	default:
	}
	if dl, ok := ctx.Deadline(); ok {
		d := time.Until(dl)
		if d <= 0 {
			return 0, context.DeadlineExceeded
		}
		return d, nil
	}
	return s.cfg.ApplyTimeout, nil
}

// raftErr maps raft's leadership errors to NotLeaderError.
func (s *Store) raftErr(op string, err error) error {
	switch {
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipLost),
		errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return fmt.Errorf("raftstore: %s: %w", op, s.notLeader(err))
	case errors.Is(err, raft.ErrRaftShutdown):
		return fmt.Errorf("raftstore: %s: %w", op, ErrClosed)
	}
	return fmt.Errorf("raftstore: %s: %w", op, err)
}

// Apply proposes c on the leader and waits until it is committed and applied
// on this (leader) node. It returns the command's Result and, when the
// command was refused, Result.Err. On a follower it returns a
// *NotLeaderError naming the leader: forwarding is the caller's business.
// The wait is bounded by ctx's deadline, or ApplyTimeout without one; when
// the wait ends early the command may still commit.
func (s *Store) Apply(ctx context.Context, c Command) (Result, error) {
	timeout, err := s.timeout(ctx)
	if err != nil {
		return Result{}, fmt.Errorf("raftstore: apply %s: %w", c.Type(), err)
	}
	if s.raft.State() != raft.Leader {
		return Result{}, fmt.Errorf("raftstore: apply %s: %w", c.Type(), s.notLeader(nil))
	}
	data, err := EncodeCommand(c, time.Now())
	if err != nil {
		return Result{}, fmt.Errorf("raftstore: apply: %w", err)
	}
	f := s.raft.Apply(data, timeout)
	if err := f.Error(); err != nil {
		return Result{}, s.raftErr("apply "+c.Type().String(), err)
	}
	res, ok := f.Response().(Result)
	if !ok {
		return Result{}, fmt.Errorf("raftstore: apply %s: unexpected FSM response %T", c.Type(), f.Response())
	}
	return res, res.Err
}

// VerifiedRead returns the state after checking, with a round of heartbeats,
// that this node is still the leader and has applied everything committed
// before its term: a read through it cannot miss a committed change. Use it
// for decisions (e.g. whether a flip may proceed); use State for the hot
// path. Followers get a *NotLeaderError.
func (s *Store) VerifiedRead(ctx context.Context) (Reader, error) {
	for !s.ready.Load() {
		if s.raft.State() != raft.Leader {
			return nil, fmt.Errorf("raftstore: verified read: %w", s.notLeader(nil))
		}
		// A new leader: its barrier is on the way.
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("raftstore: verified read: waiting for the new leader's barrier: %w", ctx.Err())
		case <-s.stop:
			return nil, fmt.Errorf("raftstore: verified read: %w", ErrClosed)
		case <-time.After(5 * time.Millisecond):
		}
	}
	if err := s.raft.VerifyLeader().Error(); err != nil {
		return nil, s.raftErr("verified read", err)
	}
	return s.fsm, nil
}

// Staleness says how far this node's local state may lag the leader's.
type Staleness struct {
	Leader bool
	// LastContact is when this follower last heard from a leader (zero on
	// the leader, and on a follower that never heard from one).
	LastContact time.Time
	// AppliedIndex is the last index applied to the local state;
	// CommitIndex the last index this node knows to be committed.
	AppliedIndex uint64
	CommitIndex  uint64
}

// Within reports whether the local state can be trusted to be at most max
// behind: always on the leader, and on a follower that heard from the leader
// within max.
func (st Staleness) Within(max time.Duration) bool {
	return st.Leader || (!st.LastContact.IsZero() && time.Since(st.LastContact) <= max)
}

// Staleness reports this node's lag. A follower whose LastContact is older
// than a few heartbeat timeouts should not take decisions on its own state.
func (s *Store) Staleness() Staleness {
	st := Staleness{
		Leader:       s.raft.State() == raft.Leader,
		AppliedIndex: s.fsm.AppliedIndex(),
		CommitIndex:  s.raft.CommitIndex(),
	}
	if !st.Leader {
		st.LastContact = s.raft.LastContact()
	}
	return st
}

// WaitApplied blocks until this node has applied index (e.g. a Result.Index
// returned by the leader), ctx ends, or the store closes.
func (s *Store) WaitApplied(ctx context.Context, index uint64) error {
	return s.fsm.waitApplied(ctx, index, s.stop)
}

// AddNode adds or updates a member on the leader: a raft voter or non-voter,
// then its registration in the replicated membership. It is what the join
// endpoint calls; an admin API may call it too. Adding a member that is
// already there with the same address and role only refreshes its
// registration.
func (s *Store) AddNode(ctx context.Context, m Member) error {
	if m.ID == "" || m.RaftAddr == "" {
		return fmt.Errorf("raftstore: add node: %w: id and raft address are required (got %q, %q)", ErrBadCommand, m.ID, m.RaftAddr)
	}
	timeout, err := s.timeout(ctx)
	if err != nil {
		return fmt.Errorf("raftstore: add node %s: %w", m.ID, err)
	}
	if s.raft.State() != raft.Leader {
		return fmt.Errorf("raftstore: add node %s: %w", m.ID, s.notLeader(nil))
	}
	cf := s.raft.GetConfiguration()
	if err := cf.Error(); err != nil {
		return s.raftErr("add node "+m.ID, err)
	}
	var cur *raft.Server
	for _, srv := range cf.Configuration().Servers {
		if string(srv.ID) == m.ID {
			cur = &srv
			break
		}
	}
	id, addr := raft.ServerID(m.ID), raft.ServerAddress(m.RaftAddr)
	isVoter := cur != nil && cur.Suffrage == raft.Voter
	switch {
	case cur != nil && cur.Address == addr && isVoter == m.Voter:
		// Already a member as asked.
	case m.Voter:
		err = s.raft.AddVoter(id, addr, 0, timeout).Error()
	default:
		if isVoter {
			// AddNonvoter keeps a voter a voter: demote first.
			if err = s.raft.DemoteVoter(id, 0, timeout).Error(); err != nil {
				break
			}
		}
		err = s.raft.AddNonvoter(id, addr, 0, timeout).Error()
	}
	if err != nil {
		return s.raftErr("add node "+m.ID, err)
	}
	if _, err := s.Apply(ctx, RegisterNode{Member: m}); err != nil {
		return fmt.Errorf("raftstore: register node %s: %w", m.ID, err)
	}
	s.log.Info("raftstore: node added", "id", m.ID, "raft_addr", m.RaftAddr, "voter", m.Voter)
	return nil
}

// RemoveNode removes a member from raft and from the membership, on the
// leader.
func (s *Store) RemoveNode(ctx context.Context, id string) error {
	timeout, err := s.timeout(ctx)
	if err != nil {
		return fmt.Errorf("raftstore: remove node %s: %w", id, err)
	}
	if err := s.raft.RemoveServer(raft.ServerID(id), 0, timeout).Error(); err != nil {
		return s.raftErr("remove node "+id, err)
	}
	if _, err := s.Apply(ctx, RemoveNode{ID: id}); err != nil {
		return fmt.Errorf("raftstore: unregister node %s: %w", id, err)
	}
	return nil
}

// leaderLoop reacts to leadership changes: a new leader applies a barrier
// (so its state holds every entry of previous terms) before it serves
// verified reads, then registers raft members missing from the membership
// (the bootstrap node, or nodes added directly through raft).
func (s *Store) leaderLoop() {
	defer s.wg.Done()
	for {
		select {
		case <-s.stop:
			return
		case leader := <-s.raft.LeaderCh():
			s.ready.Store(false)
			if !leader {
				s.log.Info("raftstore: lost leadership")
				continue
			}
			s.log.Info("raftstore: became leader")
			if err := s.raft.Barrier(s.cfg.ApplyTimeout).Error(); err != nil {
				s.log.Warn("raftstore: barrier after election failed", "err", err)
				continue
			}
			s.ready.Store(true)
			if err := s.reconcileMembers(); err != nil {
				s.log.Warn("raftstore: reconcile membership", "err", err)
			}
		}
	}
}

func (s *Store) reconcileMembers() error {
	cf := s.raft.GetConfiguration()
	if err := cf.Error(); err != nil {
		return err
	}
	for _, srv := range cf.Configuration().Servers {
		m := Member{ID: string(srv.ID), RaftAddr: string(srv.Address), Voter: srv.Suffrage == raft.Voter}
		n, known := s.fsm.Node(m.ID)
		switch {
		case m.ID == s.cfg.NodeID:
			m.AdminAddr, m.Writer = s.cfg.AdminAddr, s.cfg.Writer
		case known:
			m.AdminAddr, m.Writer = n.AdminAddr, n.Writer
		}
		if known && n.Member == m {
			continue
		}
		ctx, cancel := context.WithTimeout(s.stopCtx, s.cfg.ApplyTimeout)
		_, err := s.Apply(ctx, RegisterNode{Member: m})
		cancel()
		if err != nil {
			return fmt.Errorf("register %s: %w", m.ID, err)
		}
	}
	return nil
}

// reportLoop reports this node's applied index to the leader whenever it has
// applied a change since its last report (not counting reports, or they
// would trigger each other forever), and at least every ReportRefresh.
func (s *Store) reportLoop() {
	defer s.wg.Done()
	t := time.NewTicker(s.cfg.ReportInterval)
	defer t.Stop()
	var reported uint64
	var reportedAt time.Time
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		applied, change := s.fsm.indexes()
		if change <= reported && time.Since(reportedAt) < s.cfg.ReportRefresh {
			continue
		}
		n, ok := s.fsm.Node(s.cfg.NodeID)
		if !ok {
			continue // not registered yet: the leader would refuse the report
		}
		if me := s.self(); n.Member != me && s.raft.State() != raft.Leader {
			// Restarted with another admin address or role: register again
			// (a leader does it for itself in reconcileMembers).
			ctx, cancel := context.WithTimeout(s.stopCtx, s.cfg.ApplyTimeout)
			err := s.postLeader(ctx, pathJoin, me, nil)
			cancel()
			if err != nil {
				s.log.Debug("raftstore: update registration", "err", err)
			}
		}
		ctx, cancel := context.WithTimeout(s.stopCtx, s.cfg.ApplyTimeout)
		err := s.report(ctx, applied)
		cancel()
		if err != nil {
			s.log.Debug("raftstore: report applied index", "applied", applied, "err", err)
			continue
		}
		reported, reportedAt = applied, time.Now()
	}
}

func (s *Store) report(ctx context.Context, applied uint64) error {
	rep := ReportApplied{ID: s.cfg.NodeID, Applied: applied}
	if s.raft.State() == raft.Leader {
		_, err := s.Apply(ctx, rep)
		return err
	}
	return s.postLeader(ctx, pathReport, reportRequest{ID: rep.ID, Applied: rep.Applied}, nil)
}

// self is this node's membership as configured.
func (s *Store) self() Member {
	return Member{ID: s.cfg.NodeID, RaftAddr: s.RaftAddr(), AdminAddr: s.cfg.AdminAddr, Voter: s.cfg.Voter, Writer: s.cfg.Writer}
}

// leaderAdmin is the admin address of the leader this node knows.
func (s *Store) leaderAdmin() (string, error) {
	leaderID, _ := s.Leader()
	if leaderID == "" {
		return "", fmt.Errorf("%w: no leader known", ErrNotLeader)
	}
	n, ok := s.fsm.Node(leaderID)
	if !ok || n.AdminAddr == "" {
		return "", fmt.Errorf("leader %q has no known admin address", leaderID)
	}
	return n.AdminAddr, nil
}

// postLeader posts to the Handler of the leader this node knows.
func (s *Store) postLeader(ctx context.Context, path string, body, out any) error {
	addr, err := s.leaderAdmin()
	if err != nil {
		return err
	}
	return s.call(ctx, addr, path, body, out)
}

// ReadDir returns the state held in a stopped node's data directory: the
// latest snapshot plus every log entry after it. It is for inspection and
// tests; on a member of a multi-node cluster the log may end with entries
// that were never committed, which ReadDir includes (a single node's log is
// all committed).
func ReadDir(dir string) (Dump, error) {
	snaps, err := raft.NewFileSnapshotStoreWithLogger(dir, 2, newHCLog(slog.New(slog.DiscardHandler), slog.LevelError))
	if err != nil {
		return Dump{}, fmt.Errorf("raftstore: snapshots in %s: %w", dir, err)
	}
	f := newFSM(nil)
	var after uint64
	metas, err := snaps.List()
	if err != nil {
		return Dump{}, fmt.Errorf("raftstore: list snapshots in %s: %w", dir, err)
	}
	if len(metas) > 0 {
		_, rc, err := snaps.Open(metas[0].ID)
		if err != nil {
			return Dump{}, fmt.Errorf("raftstore: open snapshot %s: %w", metas[0].ID, err)
		}
		if err := f.Restore(rc); err != nil {
			return Dump{}, err
		}
		after = metas[0].Index
	}
	path := filepath.Join(dir, "raft.db")
	if _, err := os.Stat(path); err != nil {
		return Dump{}, fmt.Errorf("raftstore: %w", err)
	}
	bolt, err := openBolt(path)
	if err != nil {
		return Dump{}, fmt.Errorf("raftstore: open %s: %w", path, err)
	}
	defer bolt.Close()
	last, err := bolt.LastIndex()
	if err != nil {
		return Dump{}, fmt.Errorf("raftstore: read %s: %w", path, err)
	}
	for i := after + 1; i <= last; i++ {
		var l raft.Log
		if err := bolt.GetLog(i, &l); err != nil {
			return Dump{}, fmt.Errorf("raftstore: log entry %d of %s: %w", i, path, err)
		}
		f.Apply(&l)
	}
	return f.Dump(), nil
}

// openBolt opens the log store, failing rather than waiting forever when
// another process holds it (two nodes given the same data directory).
func openBolt(path string) (*raftboltdb.BoltStore, error) {
	st, err := raftboltdb.New(raftboltdb.Options{Path: path, BoltOptions: &bbolt.Options{Timeout: 2 * time.Second}})
	if errors.Is(err, bbolt.ErrTimeout) {
		return nil, fmt.Errorf("%s is in use by another process", path)
	}
	return st, err
}
