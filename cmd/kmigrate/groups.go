package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"time"

	"github.com/kmigrate/kmigrate/offsetsync"
	"github.com/kmigrate/kmigrate/raftstore"
	"github.com/kmigrate/kmigrate/replicate"
)

// groupRoutes keeps group phases in the control-plane store and serves them
// to the proxy (proxy.Routing) and to the cutover (offsetsync.PhaseStore).
type groupRoutes struct{ store raftstore.Applier }

func (g groupRoutes) GroupPhase(group string) string {
	if r, ok := g.store.State().Group(group); ok {
		return string(r.Phase)
	}
	return offsetsync.PhaseSource
}

func (g groupRoutes) SetGroupPhase(ctx context.Context, group, from, to string) error {
	res, err := g.store.Apply(ctx, raftstore.SetGroupPhase{Group: group, Phase: raftstore.GroupPhase(to), From: raftstore.GroupPhase(from)})
	if err == nil {
		err = g.readYourWrite(ctx, res)
	}
	if err == nil {
		err = res.Err
	}
	if err != nil {
		return fmt.Errorf("set group %s phase %s → %s: %w", group, from, to, err)
	}
	return nil
}

// readYourWrite waits until this node applied a change it had the leader
// commit. On a follower the leader answers once the change is committed,
// and this node applies it a moment later: meanwhile GroupPhase and
// TopicPrimary still show the previous phase, and a cutover asked of this
// node right after one completed (or a step of the same cutover) acted on
// it. Found by integration.TestFaultGroupFlipLeaderKilled: a second
// `cutover group` resumed a flip already complete from a stale "fenced",
// re-committed translated offsets to the target (refused there with
// UNKNOWN_MEMBER_ID, so nothing was overwritten) and reported an error.
func (g groupRoutes) readYourWrite(ctx context.Context, res raftstore.Result) error {
	w, ok := g.store.(interface {
		WaitApplied(context.Context, uint64) error
	})
	if !ok || res.Index == 0 {
		return nil // the leader's Apply returns once applied
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second) // a revert runs without a deadline
	defer cancel()
	if err := w.WaitApplied(ctx, res.Index); err != nil {
		return fmt.Errorf("committed at index %d, not yet applied on this node: %w", res.Index, err)
	}
	return nil
}

// mapReader serves offset maps to the proxy and the cutover.
type mapReader struct{ maps replicate.MapStore }

func (m mapReader) OffsetMap(topic string, partition int32) offsetsync.OffsetMap {
	return m.maps.Map(replicate.Partition{Topic: topic, Partition: partition})
}

// Covered waits on whichever mirror runs now. For a partition another node
// writes, the replicated map must reach v: exact for data records; a
// position past trailing transaction markers is only seen by the writer,
// so such a wait ends at the caller's deadline (the cutover then reverts).
func (c *currentMirror) Covered(ctx context.Context, topic string, partition int32, v int64) error {
	tp := replicate.Partition{Topic: topic, Partition: partition}
	if c.maps != nil && !c.maps.IsWriter(tp) {
		for {
			m := c.maps.Map(tp)
			if m.Flipped() || len(m) > 0 && m.End() >= v {
				return nil
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("%s/%d: the writer's map has not reached %d: %w", topic, partition, v, ctx.Err())
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
	for {
		if m := c.m.Load(); m != nil {
			return m.Covered(ctx, replicate.Partition{Topic: topic, Partition: partition}, v)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("mirror not running: %w", ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// groupAPI serves /v1/groups/{group} and its cutover and rollback.
type groupAPI struct {
	cutover *offsetsync.Cutover
	routes  groupRoutes
	log     *slog.Logger
	flips   *flipLog // recent moves, for GET /v1/status
}

func (a *groupAPI) register(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/groups/{group}", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"group": r.PathValue("group"), "phase": a.routes.GroupPhase(r.PathValue("group"))})
	})
	mux.HandleFunc("POST /v1/groups/{group}/cutover", func(w http.ResponseWriter, r *http.Request) { a.move(w, r, true) })
	mux.HandleFunc("POST /v1/groups/{group}/rollback", func(w http.ResponseWriter, r *http.Request) { a.move(w, r, false) })
}

// move runs a cutover or rollback. With ?wait=false it answers 202 at once
// and the move continues in the background (bounded by its own timeout).
func (a *groupAPI) move(w http.ResponseWriter, r *http.Request, toTarget bool) {
	group := r.PathValue("group")
	if group == "" {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "group name required"})
		return
	}
	run := func(ctx context.Context) (offsetsync.Report, error) {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
		defer cancel()
		start := time.Now()
		rep, err := a.cutover.Run(ctx, group, toTarget)
		a.flips.add(map[bool]string{true: "cutover", false: "rollback"}[toTarget], start, rep, err)
		return rep, err
	}
	if r.URL.Query().Get("wait") == "false" {
		go func() {
			if _, err := run(context.Background()); err != nil {
				a.log.Error("group move failed", "group", group, "to_target", toTarget, "err", err)
			}
		}()
		writeJSON(w, http.StatusAccepted, map[string]string{"group": group, "phase": a.routes.GroupPhase(group)})
		return
	}
	rep, err := run(r.Context())
	if err != nil {
		status := http.StatusInternalServerError
		switch {
		case errors.Is(err, offsetsync.ErrInProgress):
			status = http.StatusConflict
		case errors.Is(err, offsetsync.ErrUnknownGroup):
			status = http.StatusNotFound
		case errors.Is(err, offsetsync.ErrUnsupportedProtocol):
			status = http.StatusUnprocessableEntity
		}
		writeJSON(w, status, map[string]any{"error": err.Error(), "report": rep})
		return
	}
	writeJSON(w, http.StatusOK, rep)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// runGroupCommand is `kmigrate cutover group G` and `kmigrate rollback group G`.
func runGroupCommand(verb string, args []string) error {
	fs := flag.NewFlagSet("kmigrate "+verb, flag.ContinueOnError)
	admin := fs.String("admin", "127.0.0.1:9644", "admin address of a kmigrate proxy")
	noWait := fs.Bool("no-wait", false, "return at once instead of waiting for the end")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	token := fs.String("admin-token", "", "bearer token of the admin API (default: $"+adminTokenEnv+")")
	if len(args) < 2 || args[0] != "group" {
		return fmt.Errorf("usage: kmigrate %s group GROUP [--admin HOST:PORT] [--no-wait] [--json]", verb)
	}
	group := args[1]
	if err := fs.Parse(args[2:]); err != nil {
		return err
	}
	path := fmt.Sprintf("/v1/groups/%s/%s", url.PathEscape(group), verb)
	if *noWait {
		path += "?wait=false"
	}
	start := time.Now()
	stopProgress := showProgress(*admin, *token, "/v1/groups/"+url.PathEscape(group), "phase", *asJSON || *noWait)
	rep, body, err := postMove[offsetsync.Report](*admin, *token, path)
	stopProgress()
	if *asJSON {
		os.Stdout.Write(body)
	}
	if err != nil {
		return fmt.Errorf("%s group %s: %w", verb, group, err)
	}
	if !*asJSON {
		switch {
		case *noWait:
			fmt.Printf("%s of group %s started\n", verb, group)
		case rep.AlreadyDone:
			fmt.Printf("group %s is already on the %s\n", group, rep.To)
		default:
			fmt.Printf("group %s: %s → %s, phase %s, %d partitions, %d/%d members rejoined, drain %s, took %s\n",
				group, rep.From, rep.To, rep.Phase, rep.Partitions, rep.Rejoined, rep.Members,
				rep.Drain.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
		}
	}
	return nil
}
