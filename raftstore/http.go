package raftstore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// The two endpoints a node needs from the leader. They are plain JSON over
// HTTP, meant to be mounted on the node's admin server (which also sets the
// access policy: they change cluster membership).
const (
	pathJoin   = "/v1/raftstore/join"
	pathReport = "/v1/raftstore/report"
	pathApply  = "/v1/raftstore/apply"
)

type joinRequest = Member

type reportRequest struct {
	ID      string `json:"id"`
	Applied uint64 `json:"applied"`
}

// errorResponse is the body of every non-2xx answer. A node that does not
// lead answers 421 Misdirected Request with the leader it knows.
type errorResponse struct {
	Error           string `json:"error"`
	LeaderID        string `json:"leader_id,omitempty"`
	LeaderRaftAddr  string `json:"leader_raft_addr,omitempty"`
	LeaderAdminAddr string `json:"leader_admin_addr,omitempty"`
}

// Handler serves the endpoints nodes call on the leader:
//
//	POST /v1/raftstore/join    {"id","raft_addr","admin_addr","voter","writer"} → AddNode
//	POST /v1/raftstore/report  {"id","applied"}                                  → ReportApplied
//	POST /v1/raftstore/apply   {"entry": EncodeCommand bytes}                    → Apply (Propose)
//
// Only the leader serves them; other nodes answer 421 with the leader's
// addresses, and the caller goes there. It also serves, on every node from
// its local state, the read-only admin API (see admin.go):
//
//	GET /v1/nodes            membership, applied indexes, liveness, leader
//	GET /v1/changes          every route change and whether it is complete
//	GET /v1/changes/{index}  which live nodes have applied raft index {index}
//	GET /v1/writers          the mirror writer and epoch of each partition
func (s *Store) Handler() http.Handler {
	mux := http.NewServeMux()
	s.adminRoutes(mux)
	mux.HandleFunc("POST "+pathApply, s.serveApply)
	mux.HandleFunc("POST "+pathJoin, func(w http.ResponseWriter, r *http.Request) {
		var req joinRequest
		if !decodeRequest(w, r, &req) {
			return
		}
		writeResult(w, s.AddNode(r.Context(), req))
	})
	mux.HandleFunc("POST "+pathReport, func(w http.ResponseWriter, r *http.Request) {
		var req reportRequest
		if !decodeRequest(w, r, &req) {
			return
		}
		_, err := s.Apply(r.Context(), ReportApplied(req))
		writeResult(w, err)
	})
	return mux
}

func decodeRequest(w http.ResponseWriter, r *http.Request, v any) bool {
	return decodeRequestLimit(w, r, v, 1<<16)
}

func decodeRequestLimit(w http.ResponseWriter, r *http.Request, v any, limit int64) bool {
	dec := json.NewDecoder(io.LimitReader(r.Body, limit))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeJSON(w, http.StatusBadRequest, errorResponse{Error: "bad request: " + err.Error()})
		return false
	}
	return true
}

func writeResult(w http.ResponseWriter, err error) {
	var nl *NotLeaderError
	switch {
	case err == nil:
		writeJSON(w, http.StatusOK, struct{}{})
	case errors.As(err, &nl):
		writeJSON(w, http.StatusMisdirectedRequest, errorResponse{
			Error: err.Error(), LeaderID: nl.LeaderID, LeaderRaftAddr: nl.LeaderRaftAddr, LeaderAdminAddr: nl.LeaderAdminAddr,
		})
	case errors.Is(err, ErrBadCommand), errors.Is(err, ErrUnknownNode):
		writeJSON(w, http.StatusBadRequest, errorResponse{Error: err.Error()})
	default:
		writeJSON(w, http.StatusInternalServerError, errorResponse{Error: err.Error()})
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// post sends a request to another node's Handler; a 421 becomes a
// *NotLeaderError.
func (s *Store) post(ctx context.Context, adminAddr, path string, body any) error {
	return s.call(ctx, adminAddr, path, body, nil)
}

// call is post that decodes a 200 answer into out (when not nil).
func (s *Store) call(ctx context.Context, adminAddr, path string, body, out any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	url := adminAddr
	if !strings.Contains(url, "://") {
		url = "http://" + url
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(url, "/")+path, bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("post %s: %w", path, err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.http.Do(req)
	if err != nil {
		return fmt.Errorf("post %s to %s: %w", path, adminAddr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		if out != nil {
			if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(out); err != nil {
				return fmt.Errorf("post %s to %s: bad answer: %w", path, adminAddr, err)
			}
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	var er errorResponse
	_ = json.NewDecoder(io.LimitReader(resp.Body, 1<<16)).Decode(&er)
	if resp.StatusCode == http.StatusMisdirectedRequest {
		return &NotLeaderError{LeaderID: er.LeaderID, LeaderRaftAddr: er.LeaderRaftAddr, LeaderAdminAddr: er.LeaderAdminAddr}
	}
	return fmt.Errorf("post %s to %s: %s: %s", path, adminAddr, resp.Status, er.Error)
}

// join asks the cluster to add this node, through Config.Join, following the
// answers toward the leader, and retrying while the cluster has no leader or
// the leader is not reachable yet.
func (s *Store) join(ctx context.Context) error {
	me := s.self()
	target := s.cfg.Join
	backoff := 50 * time.Millisecond
	hops := 0
	for {
		err := s.post(ctx, target, pathJoin, me)
		if err == nil {
			s.log.Info("raftstore: joined", "via", target, "voter", me.Voter)
			return nil
		}
		var nl *NotLeaderError
		if errors.As(err, &nl) && nl.LeaderAdminAddr != "" && nl.LeaderAdminAddr != target && hops < 3 {
			target = nl.LeaderAdminAddr // go straight to the leader
			hops++
			continue
		}
		hops = 0
		s.log.Debug("raftstore: join attempt failed", "via", target, "err", err)
		// Start over from the configured address: a leader we were sent to
		// may have gone.
		target = s.cfg.Join
		select {
		case <-ctx.Done():
			return fmt.Errorf("raftstore: join via %s: %w (last error: %w)", s.cfg.Join, ctx.Err(), err)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
	}
}
