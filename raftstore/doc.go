// Package raftstore is kmigrate's replicated control plane: a hashicorp/raft
// state machine holding
//
//   - the routing of each consumer group (source → draining → fenced →
//     target, and back through rollback-draining → rollback-fenced), with an
//     epoch bumped at every change and the raft index of that change;
//   - the producer routing of each topic (source | draining | target |
//     rolling-back, reverse mirror on/off), with an epoch;
//   - the offset map of each partition (offsetsync.Segment, offsetsync.OffsetMap);
//   - the mirror writer of each partition, with an epoch changed only by
//     compare-and-set, so that two writers never both hold a partition;
//   - the node membership, with the last applied index each node reported,
//     so that a change counts as complete only when every live node has
//     applied it (NodesBehind).
//
// # Commands
//
// Every change is a Command (SetGroupPhase, SetTopicPrimary,
// SetReverseMirror, AppendSegments, ClaimWriter, ReleaseWriter,
// RegisterNode, ReportApplied, SetNodeDead, RemoveNode). A raft entry is a
// type byte, a body version byte, the proposer's clock (8 bytes, Unix ns)
// and a JSON body (EncodeCommand). JSON was chosen over a binary body because
// commands are small and rare compared with what raft can carry, JSON is
// readable when inspecting a log, and encoding/json is deterministic for
// structs (fields in declaration order; bodies hold no maps or floats).
// Bodies are decoded strictly: an unknown field, type or version is refused
// (Result.Err wraps ErrUnknownCommand or ErrBadCommand) and the state is left
// unchanged; a type byte with IgnoreUnknownFlag is skipped instead, as in
// Consul. Snapshots, which can hold millions of segments, use a versioned
// binary encoding (WriteSnapshot) instead.
//
// Apply is pure: the time of a change comes from the command, never from the
// applying node's clock. Each command applies entirely or not at all, and
// returns a Result (new epoch, changed or not, or the refusal). Asking for
// the phase a route is already in succeeds without change, so an operator
// repeating a flip cannot corrupt anything; a move the state machine does
// not allow (e.g. draining a group that is on the target: roll back instead)
// is refused with ErrInvalidTransition.
//
// # Nodes
//
// Open starts a node with its raft log and stable store in DataDir
// (raft-boltdb v2), file snapshots (2 kept) and a TCP transport. A node with
// an empty DataDir and no Join bootstraps a single-voter cluster: the
// embedded default. Joining is an HTTP call: every node mounts Handler on its
// admin server, and a new node posts its id, raft and admin addresses to
// Config.Join; a non-leader answers with the leader's admin address and the
// new node retries there; the leader calls AddNode (AddVoter or
// AddNonvoter, then RegisterNode). AddNode can also be called directly on the
// leader, e.g. from an admin endpoint. Nodes report their applied index
// through the same Handler.
//
// Apply runs on the leader; Propose (and Forwarding, an Applier) works on
// any node: a follower posts the encoded command to the leader's
// /v1/raftstore/apply and gets the leader's Result back, with the same
// refusal errors. Handler also serves, from the local state, the admin API:
// GET /v1/nodes, /v1/changes, /v1/changes/{index} (ChangeProgress: which live
// nodes have applied an index) and /v1/writers.
//
// # Liveness and writers
//
// RunAssigner runs on every node and acts on the leader: it declares dead a
// node whose applied-index reports stopped for DeadAfter (on the leader's own
// clock), and gives each partition listed by AssignerConfig.Partitions whose
// writer is none or dead to the live writer node (Member.Writer) with the
// fewest partitions. replicate/raftmaps turns this into the mirror's
// ownership hook and map store. ReadDir reads a stopped node's data
// directory offline.
//
// Reads are local on every node (State, a Reader); Staleness tells how far
// behind the node may be (Staleness.Within bounds it), WaitApplied waits for an index, and VerifiedRead
// checks leadership first for decisions that need the latest state. Apply
// runs on the leader only and returns a *NotLeaderError naming the leader
// elsewhere: forwarding is the caller's choice.
//
// Reader is the whole read interface, so that sidecars can later follow the
// voters through a watch stream instead of being raft members without their
// callers changing. Memory implements the same state without raft for unit
// tests of other packages.
package raftstore
