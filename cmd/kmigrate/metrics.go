package main

import (
	"strconv"
	"time"

	"github.com/kmigrate/kmigrate/raftstore"
	"github.com/prometheus/client_golang/prometheus"
)

// The control plane's series, read from this node's raft state at scrape
// time (like the mirror's): routes and membership change rarely, and
// computing them on demand keeps raft's apply path free of metric updates.
var (
	descRaftRole = prometheus.NewDesc("kmigrate_raft_role",
		"1 for this node's raft role: leader, voter (a following voter) or nonvoter.", []string{"role"}, nil)
	descRaftApplied = prometheus.NewDesc("kmigrate_raft_applied_index",
		"Last raft index applied to this node's state.", nil, nil)
	descRaftCommit = prometheus.NewDesc("kmigrate_raft_commit_index",
		"Last raft index this node knows to be committed.", nil, nil)
	descRaftContact = prometheus.NewDesc("kmigrate_raft_last_contact_seconds",
		"Seconds since this follower last heard from the leader (0 on the leader, -1 before any contact).", nil, nil)
	descNodes = prometheus.NewDesc("kmigrate_control_plane_nodes",
		"Members of the control plane, by liveness as the leader last recorded it.", []string{"state", "voter"}, nil)
	descGroupPhase = prometheus.NewDesc("kmigrate_group_phase",
		"1 for each routed consumer group's phase (source, draining, fenced, target, rollback-draining, rollback-fenced).", []string{"group", "phase"}, nil)
	descTopicPrimary = prometheus.NewDesc("kmigrate_topic_primary",
		"1 for the cluster that takes each routed topic's produces.", []string{"topic", "primary"}, nil)
	descWriterPartitions = prometheus.NewDesc("kmigrate_mirror_writer_partitions",
		"Partitions whose mirror each node writes, per the control plane.", []string{"node"}, nil)
)

// controlPlaneMetrics is a prometheus.Collector over a node's raft store.
type controlPlaneMetrics struct{ store *raftstore.Store }

func (controlPlaneMetrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descRaftRole, descRaftApplied, descRaftCommit, descRaftContact,
		descNodes, descGroupPhase, descTopicPrimary, descWriterPartitions} {
		ch <- d
	}
}

func (c controlPlaneMetrics) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	st := c.store.Staleness()
	state := c.store.State()

	role := "nonvoter"
	if me, ok := state.Node(c.store.ID()); ok && me.Voter {
		role = "voter"
	}
	if st.Leader {
		role = "leader"
	}
	for _, r := range []string{"leader", "voter", "nonvoter"} {
		gauge(descRaftRole, boolFloat(r == role), r)
	}
	gauge(descRaftApplied, float64(st.AppliedIndex))
	gauge(descRaftCommit, float64(st.CommitIndex))
	switch {
	case st.Leader:
		gauge(descRaftContact, 0)
	case st.LastContact.IsZero():
		gauge(descRaftContact, -1)
	default:
		gauge(descRaftContact, time.Since(st.LastContact).Seconds())
	}

	type nodeKey struct{ state, voter string }
	nodes := map[nodeKey]int{}
	for _, n := range state.Nodes() {
		k := nodeKey{"live", strconv.FormatBool(n.Voter)}
		if n.Dead {
			k.state = "dead"
		}
		nodes[k]++
	}
	for k, n := range nodes {
		gauge(descNodes, float64(n), k.state, k.voter)
	}
	for _, g := range state.Groups() {
		gauge(descGroupPhase, 1, g.Group, string(g.Phase))
	}
	for _, t := range state.Topics() {
		gauge(descTopicPrimary, 1, t.Topic, string(t.Primary))
	}
	writers := map[string]int{}
	for _, w := range state.Writers() {
		if w.Node != "" {
			writers[w.Node]++
		}
	}
	for node, n := range writers {
		gauge(descWriterPartitions, float64(n), node)
	}
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
