package raftstore

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/hashicorp/raft"
	"github.com/kmigrate/kmigrate/offsetsync"
)

// refusals are the errors a Result may carry, by their text: a forwarded
// command's refusal crosses HTTP as that text and is rebuilt on the caller's
// side, so that errors.Is works the same for a local and a forwarded Apply.
var refusals = []error{ErrUnknownCommand, ErrBadCommand, ErrEpochMismatch, ErrPhaseMismatch,
	ErrInvalidTransition, ErrStaleWriter, ErrUnknownNode, ErrNodeDead, offsetsync.ErrSegment}

// remoteRefusal is a refusal decided by the leader for a forwarded command.
type remoteRefusal struct {
	kind error
	msg  string
}

func (e *remoteRefusal) Error() string { return e.msg }
func (e *remoteRefusal) Unwrap() error { return e.kind }

type applyRequest struct {
	Entry []byte `json:"entry"` // EncodeCommand's bytes
}

type applyResponse struct {
	Result
	Refusal string `json:"refusal,omitempty"` // the refusal's sentinel text
	Error   string `json:"error,omitempty"`   // the whole refusal message
}

// Propose applies c through the leader from any node. On the leader it is
// Apply; elsewhere the command goes to the leader's Handler (POST
// /v1/raftstore/apply) and the leader's Result comes back, refusals included
// (errors.Is works as for Apply). While no leader is known, or the leader
// changes or cannot be reached, it retries until ctx ends (ApplyTimeout
// when ctx has no deadline).
//
// A retried command may have committed at the first attempt: propose only
// commands whose repetition is harmless, as raftstore's are (appends that
// restate the same segments are accepted, claims are compare-and-set).
func (s *Store) Propose(ctx context.Context, c Command) (Result, error) {
	entry, err := EncodeCommand(c, time.Time{})
	if err != nil {
		return Result{}, fmt.Errorf("raftstore: propose: %w", err)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.cfg.ApplyTimeout)
		defer cancel()
	}
	backoff := 10 * time.Millisecond
	for {
		var res Result
		if s.raft.State() == raft.Leader {
			res, err = s.Apply(ctx, c)
		} else {
			res, err = s.forward(ctx, entry)
		}
		if err == nil || res.Err != nil || errors.Is(err, ErrClosed) || ctx.Err() != nil {
			return res, err
		}
		s.log.Debug("raftstore: propose: retrying", "command", c.Type().String(), "err", err)
		select {
		case <-ctx.Done():
			return res, fmt.Errorf("raftstore: propose %s: %w (last error: %w)", c.Type(), ctx.Err(), err)
		case <-s.stop:
			return res, fmt.Errorf("raftstore: propose %s: %w", c.Type(), ErrClosed)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 500*time.Millisecond)
	}
}

// forward sends an encoded command to the leader's Handler.
func (s *Store) forward(ctx context.Context, entry []byte) (Result, error) {
	var ans applyResponse
	if err := s.postLeader(ctx, pathApply, applyRequest{Entry: entry}, &ans); err != nil {
		return Result{}, fmt.Errorf("raftstore: forward to the leader: %w", err)
	}
	res := ans.Result
	if ans.Refusal != "" || ans.Error != "" {
		kind := ErrBadCommand
		for _, e := range refusals {
			if e.Error() == ans.Refusal {
				kind = e
			}
		}
		res.Err = &remoteRefusal{kind: kind, msg: ans.Error}
		res.Changed = false
	}
	return res, res.Err
}

// serveApply applies a forwarded command on the leader.
func (s *Store) serveApply(w http.ResponseWriter, r *http.Request) {
	var req applyRequest
	if !decodeRequestLimit(w, r, &req, 64<<20) {
		return
	}
	c, _, err := DecodeCommand(req.Entry)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, errorResponse{Error: err.Error()})
		return
	}
	res, err := s.Apply(r.Context(), c)
	if res.Err != nil {
		ans := applyResponse{Result: res, Error: res.Err.Error(), Refusal: ErrBadCommand.Error()}
		for _, e := range refusals {
			if errors.Is(res.Err, e) {
				ans.Refusal = e.Error()
				break
			}
		}
		writeJSON(w, http.StatusOK, ans)
		return
	}
	if err != nil {
		writeResult(w, err)
		return
	}
	writeJSON(w, http.StatusOK, applyResponse{Result: res})
}

// Forwarding returns an Applier that works on any node: its Apply is
// Propose, its State the local state.
func (s *Store) Forwarding() Applier { return forwarding{s} }

type forwarding struct{ s *Store }

func (f forwarding) Apply(ctx context.Context, c Command) (Result, error) { return f.s.Propose(ctx, c) }
func (f forwarding) State() Reader                                        { return f.s.State() }

// WaitApplied waits until this node applied index (see Store.WaitApplied):
// after Apply, it makes State show the change (read your writes).
func (f forwarding) WaitApplied(ctx context.Context, index uint64) error {
	return f.s.WaitApplied(ctx, index)
}
