package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/kmigrate/kmigrate/proxy"
	"github.com/kmigrate/kmigrate/raftstore"
)

// fleetGate answers the cutovers' questions (offsetsync.Gate,
// offsetsync.ProduceGate) for every live node, not only this one: which
// members' JoinGroups are held, how many commits and produces are in
// flight. Each peer is asked over its admin API (GET /v1/gate) after it has
// applied the route change the question is about, so a node that has not
// yet seen a fence or a hold cannot forward a request the cutover does not
// count. A peer that does not answer counts as one request in flight: the
// cutover then waits, and reverts at its bound, rather than risk a loss.
type fleetGate struct {
	local *proxy.Proxy
	store *raftstore.Store
	token string
	log   *slog.Logger
	http  *http.Client
}

// gateAnswer is one node's part.
type gateAnswer struct {
	Applied          uint64   `json:"applied"`
	HeldMembers      []string `json:"held_members,omitempty"`
	InflightCommits  int      `json:"inflight_commits"`
	InflightProduces int      `json:"inflight_produces"`
	// MovedMembers are the group's members this node sent to the group's
	// new home and still waits for there (proxy/moved.go).
	MovedMembers []proxy.MovedMember `json:"moved_members,omitempty"`
}

func newFleetGate(local *proxy.Proxy, store *raftstore.Store, token string, log *slog.Logger) *fleetGate {
	return &fleetGate{local: local, store: store, token: token, log: log, http: &http.Client{Timeout: 5 * time.Second}}
}

// peers are the live nodes other than this one that serve an admin API.
func (g *fleetGate) peers() []raftstore.Node {
	var out []raftstore.Node
	for _, n := range g.store.State().Nodes() {
		if n.ID != g.store.ID() && !n.Dead && n.AdminAddr != "" {
			out = append(out, n)
		}
	}
	return out
}

// ask queries every peer at once, bounded by ctx; failed answers are nil.
func (g *fleetGate) ask(ctx context.Context, query url.Values) []*gateAnswer {
	peers := g.peers()
	answers := make([]*gateAnswer, len(peers))
	var wg sync.WaitGroup
	for i, n := range peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a, err := g.askOne(ctx, n.AdminAddr, query)
			if err != nil {
				g.log.Warn("cutover: a node did not say what it holds; counting one request in flight there", "node", n.ID, "err", err)
				return
			}
			answers[i] = a
		}()
	}
	wg.Wait()
	return answers
}

func (g *fleetGate) askOne(ctx context.Context, addr string, query url.Values) (*gateAnswer, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/v1/gate?"+query.Encode(), nil)
	if err != nil {
		return nil, err
	}
	if t := adminToken(g.token); t != "" {
		req.Header.Set("Authorization", "Bearer "+t)
	}
	resp, err := g.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /v1/gate at %s: %s", addr, resp.Status)
	}
	var a gateAnswer
	if err := json.NewDecoder(resp.Body).Decode(&a); err != nil {
		return nil, fmt.Errorf("GET /v1/gate at %s: %w", addr, err)
	}
	return &a, nil
}

func (g *fleetGate) HeldMembers(group string) map[string]bool {
	held := g.local.HeldMembers(group)
	r, _ := g.store.State().Group(group)
	for _, a := range g.ask(context.Background(), url.Values{"group": {group}, "index": {strconv.FormatUint(r.ChangedIndex, 10)}}) {
		if a != nil {
			for _, m := range a.HeldMembers {
				held[m] = true
			}
		}
	}
	return held
}

// PeerMovedMembers lists the members of group the other nodes sent to its
// new home and still wait for there (proxy.Config.PeerMovedMembers). A peer
// that does not answer adds none: the check is then as good as this
// node's own.
func (g *fleetGate) PeerMovedMembers(ctx context.Context, group string) []proxy.MovedMember {
	var out []proxy.MovedMember
	for _, a := range g.ask(ctx, url.Values{"group": {group}}) {
		if a != nil {
			out = append(out, a.MovedMembers...)
		}
	}
	return out
}

func (g *fleetGate) InflightCommits(group string) int {
	n := g.local.InflightCommits(group)
	r, _ := g.store.State().Group(group)
	for _, a := range g.ask(context.Background(), url.Values{"group": {group}, "index": {strconv.FormatUint(r.ChangedIndex, 10)}}) {
		if a == nil {
			n++
		} else {
			n += a.InflightCommits
		}
	}
	return n
}

func (g *fleetGate) InflightProduces(topic string) int {
	n := g.local.InflightProduces(topic)
	r, _ := g.store.State().Topic(topic)
	for _, a := range g.ask(context.Background(), url.Values{"topic": {topic}, "index": {strconv.FormatUint(r.ChangedIndex, 10)}}) {
		if a == nil {
			n++
		} else {
			n += a.InflightProduces
		}
	}
	return n
}

// registerGate serves GET /v1/gate?group=G&topic=T&index=I: what this node
// holds for G and T, once it has applied raft index I (waiting up to 5 s).
func registerGate(mux *http.ServeMux, local *proxy.Proxy, store *raftstore.Store) {
	mux.HandleFunc("GET /v1/gate", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if s := q.Get("index"); s != "" {
			index, err := strconv.ParseUint(s, 10, 64)
			if err != nil {
				writeJSON(w, http.StatusBadRequest, map[string]string{"error": "index must be a raft index"})
				return
			}
			ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
			defer cancel()
			if err := store.WaitApplied(ctx, index); err != nil {
				writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": fmt.Sprintf("index %d not applied here: %v", index, err)})
				return
			}
		}
		a := gateAnswer{Applied: store.State().AppliedIndex()}
		if group := q.Get("group"); group != "" {
			for m := range local.HeldMembers(group) {
				a.HeldMembers = append(a.HeldMembers, m)
			}
			a.InflightCommits = local.InflightCommits(group)
			a.MovedMembers = local.MovedMembers(group)
		}
		if topic := q.Get("topic"); topic != "" {
			a.InflightProduces = local.InflightProduces(topic)
		}
		writeJSON(w, http.StatusOK, a)
	})
}
