package raftstore

import (
	"net/http"
	"strconv"
)

// NodeStatus is a node as the admin API shows it.
type NodeStatus struct {
	Node
	// Live is the opposite of Dead: changes wait for live nodes only.
	Live bool `json:"live"`
	// Leader marks the node the answering node believes leads.
	Leader bool `json:"leader"`
}

// NodeApplied names a node and the last index it reported applying.
type NodeApplied struct {
	ID      string `json:"id"`
	Applied uint64 `json:"applied"`
}

// ChangeStatus says which nodes have applied a raft index. A change (a
// route's ChangedIndex) is complete when every live node has applied it
// (DESIGN.md, "Control plane"): Behind is then empty.
type ChangeStatus struct {
	Index     uint64        `json:"index"`
	Complete  bool          `json:"complete"`
	AppliedBy []string      `json:"applied_by"`
	Behind    []NodeApplied `json:"behind"`
	// Dead nodes are not waited for.
	Dead []string `json:"dead"`
}

// ChangeProgress tells which nodes of r's membership have reported applying
// index.
func ChangeProgress(r Reader, index uint64) ChangeStatus {
	cs := ChangeStatus{Index: index, AppliedBy: []string{}, Behind: []NodeApplied{}, Dead: []string{}}
	for _, n := range r.Nodes() {
		switch {
		case n.Dead:
			cs.Dead = append(cs.Dead, n.ID)
		case n.Applied >= index:
			cs.AppliedBy = append(cs.AppliedBy, n.ID)
		default:
			cs.Behind = append(cs.Behind, NodeApplied{ID: n.ID, Applied: n.Applied})
		}
	}
	cs.Complete = len(cs.Behind) == 0
	return cs
}

// RouteChange is the last change of one route and its progress.
type RouteChange struct {
	Kind  string `json:"kind"` // "group" or "topic"
	Name  string `json:"name"`
	Phase string `json:"phase"` // group phase or producer primary
	Epoch uint64 `json:"epoch"`
	ChangeStatus
}

func (s *Store) adminRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/nodes", func(w http.ResponseWriter, _ *http.Request) {
		leader, _ := s.Leader()
		out := []NodeStatus{}
		for _, n := range s.fsm.Nodes() {
			out = append(out, NodeStatus{Node: n, Live: !n.Dead, Leader: n.ID == leader})
		}
		st := s.Staleness()
		writeJSON(w, http.StatusOK, map[string]any{
			"node": s.cfg.NodeID, "leader": leader, "applied_index": st.AppliedIndex,
			"commit_index": st.CommitIndex, "nodes": out,
		})
	})
	mux.HandleFunc("GET /v1/changes/{index}", func(w http.ResponseWriter, r *http.Request) {
		index, err := strconv.ParseUint(r.PathValue("index"), 10, 64)
		if err != nil {
			writeJSON(w, http.StatusBadRequest, errorResponse{Error: "index: " + err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, ChangeProgress(s.fsm, index))
	})
	mux.HandleFunc("GET /v1/changes", func(w http.ResponseWriter, _ *http.Request) {
		out := []RouteChange{}
		for _, g := range s.fsm.Groups() {
			out = append(out, RouteChange{Kind: "group", Name: g.Group, Phase: string(g.Phase), Epoch: g.Epoch,
				ChangeStatus: ChangeProgress(s.fsm, g.ChangedIndex)})
		}
		for _, t := range s.fsm.Topics() {
			out = append(out, RouteChange{Kind: "topic", Name: t.Topic, Phase: string(t.Primary), Epoch: t.Epoch,
				ChangeStatus: ChangeProgress(s.fsm, t.ChangedIndex)})
		}
		writeJSON(w, http.StatusOK, out)
	})
	mux.HandleFunc("GET /v1/writers", func(w http.ResponseWriter, _ *http.Request) {
		out := s.fsm.Writers()
		if out == nil {
			out = []WriterOwner{}
		}
		writeJSON(w, http.StatusOK, out)
	})
}
