package raftstore

import (
	"cmp"
	"context"
	"log/slog"
	"slices"
	"time"
)

// AssignerConfig configures RunAssigner.
type AssignerConfig struct {
	// Partitions lists the partitions that need a mirror writer (the
	// source partitions the mirror selects). It is called on the leader
	// only, and only while some live node is a writer.
	Partitions func(ctx context.Context) ([]TopicPartition, error)
	// Recheck is how often Partitions is called again (default 5s).
	Recheck time.Duration
	// Tick is how often liveness and assignments are checked (default 250ms).
	Tick time.Duration
	// DeadAfter declares dead a node whose applied-index reports stopped for
	// that long (default 4s). It must exceed the nodes' ReportRefresh
	// comfortably; a node that reports again is live again.
	DeadAfter time.Duration
	Logger    *slog.Logger
}

// RunAssigner runs, until ctx ends, the two duties of the leader toward the
// fleet (it idles on other nodes, and takes over on the node that becomes
// leader):
//
//   - liveness: a node whose reports stop for DeadAfter, as seen by this
//     leader's own clock, is declared dead (SetNodeDead), so that changes
//     stop waiting for it and its partitions can move. A new leader first
//     gives every node DeadAfter/2 from its election (reports reach it
//     within about a report interval).
//   - writers: every partition listed by Partitions whose writer is none, a
//     dead node, or a node that is not a live writer, is assigned to the
//     live writer node with the fewest partitions (AssignWriter: the epoch
//     moves, which fences the previous owner). Healthy writers are never
//     moved, so a partition changes hands only when its owner died.
//
// With a Tick of 250ms and DeadAfter of 4s, a writer killed with SIGKILL has
// its partitions reassigned within about 4.5s; if it was also the leader,
// an election (1-3s) plus DeadAfter/2.
func (s *Store) RunAssigner(ctx context.Context, cfg AssignerConfig) {
	if cfg.Recheck <= 0 {
		cfg.Recheck = 5 * time.Second
	}
	if cfg.Tick <= 0 {
		cfg.Tick = 250 * time.Millisecond
	}
	if cfg.DeadAfter <= 0 {
		cfg.DeadAfter = 4 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = s.log
	}
	a := &assigner{s: s, cfg: cfg, log: cfg.Logger.With("component", "assigner")}
	t := time.NewTicker(cfg.Tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.stop:
			return
		case <-t.C:
		}
		if !s.IsLeader() || !s.ready.Load() {
			a.seen = nil // a later term starts afresh
			continue
		}
		a.tick(ctx)
	}
}

type assigner struct {
	s   *Store
	cfg AssignerConfig
	log *slog.Logger

	// seen is, per node, the last ReportedAt this leader saw and when (its
	// own clock) it first saw it. nil when not leading.
	seen       map[string]seenReport
	parts      []TopicPartition
	partsAt    time.Time
	partsKnown bool
}

type seenReport struct {
	reportedAt time.Time
	at         time.Time
}

func (a *assigner) tick(ctx context.Context) {
	now := time.Now()
	if a.seen == nil {
		// A new term. The nodes' reports now come to this leader, within
		// a report interval or so; give them half of DeadAfter, so that a
		// leader that died with its node is replaced sooner.
		a.seen = map[string]seenReport{}
		a.partsKnown = false
		grace := now.Add(-a.cfg.DeadAfter / 2)
		for _, n := range a.s.State().Nodes() {
			a.seen[n.ID] = seenReport{reportedAt: n.ReportedAt, at: grace}
		}
	}
	st := a.s.State()
	for _, n := range st.Nodes() {
		if n.ID == a.s.ID() {
			continue // the leader is alive by definition
		}
		seen, ok := a.seen[n.ID]
		if !ok || !seen.reportedAt.Equal(n.ReportedAt) {
			a.seen[n.ID] = seenReport{reportedAt: n.ReportedAt, at: now}
			continue
		}
		if !n.Dead && now.Sub(seen.at) > a.cfg.DeadAfter {
			actx, cancel := context.WithTimeout(ctx, a.s.cfg.ApplyTimeout)
			_, err := a.s.Apply(actx, SetNodeDead{ID: n.ID, Dead: true})
			cancel()
			if err != nil {
				a.log.Warn("raftstore: declare node dead", "node", n.ID, "err", err)
				return
			}
			a.log.Warn("raftstore: node declared dead: no report", "node", n.ID,
				"silent_for", now.Sub(seen.at).Round(time.Millisecond), "applied", n.Applied)
		}
	}
	a.assign(ctx, st)
}

func (a *assigner) assign(ctx context.Context, st Reader) {
	load := map[string]int{}
	var writers []string
	for _, n := range st.Nodes() {
		if n.Writer && !n.Dead {
			load[n.ID] = 0
			writers = append(writers, n.ID)
		}
	}
	if len(writers) == 0 || a.cfg.Partitions == nil {
		return
	}
	if !a.partsKnown || time.Since(a.partsAt) > a.cfg.Recheck {
		lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		parts, err := a.cfg.Partitions(lctx)
		cancel()
		a.partsAt = time.Now() // on failure too: retry at the next Recheck
		if err != nil {
			a.log.Warn("raftstore: list partitions for writer assignment", "err", err)
		} else {
			slices.SortFunc(parts, compareTP)
			a.parts, a.partsKnown = parts, true
		}
	}
	owners := make(map[TopicPartition]string)
	for _, w := range st.Writers() {
		owners[w.TopicPartition] = w.Node
		if _, ok := load[w.Node]; ok {
			load[w.Node]++
		}
	}
	for _, tp := range a.parts {
		if _, ok := load[owners[tp]]; ok {
			continue // a live writer holds it
		}
		to := slices.MinFunc(writers, func(x, y string) int {
			return cmp.Or(cmp.Compare(load[x], load[y]), cmp.Compare(x, y))
		})
		actx, cancel := context.WithTimeout(ctx, a.s.cfg.ApplyTimeout)
		w, err := AssignWriter(actx, a.s, tp, to)
		cancel()
		if err != nil {
			a.log.Warn("raftstore: assign writer", "topic", tp.Topic, "partition", tp.Partition, "node", to, "err", err)
			return // next tick, from a fresh state
		}
		load[to]++
		a.log.Info("raftstore: writer assigned", "topic", tp.Topic, "partition", tp.Partition,
			"node", to, "epoch", w.Epoch, "previous", owners[tp])
	}
}
