package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/kmigrate/kmigrate/offsetsync"
	"github.com/kmigrate/kmigrate/raftstore"
)

func (g groupRoutes) TopicPrimary(topic string) string {
	if r, ok := g.store.State().Topic(topic); ok {
		return string(r.Primary)
	}
	return offsetsync.PrimarySource
}

func (g groupRoutes) TopicEpoch(topic string) uint64 {
	r, _ := g.store.State().Topic(topic)
	return r.Epoch
}

func (g groupRoutes) SetTopicPrimary(ctx context.Context, topic, from, to string, segs map[int32]offsetsync.Segment) error {
	cmd := raftstore.SetTopicPrimary{Topic: topic, Primary: raftstore.ProducerPrimary(to), From: raftstore.ProducerPrimary(from)}
	for p, s := range segs {
		cmd.Segments = append(cmd.Segments, raftstore.PartitionSegment{Partition: p, Segment: s})
	}
	// Sorted, so that every replica of the command is byte-identical.
	slices.SortFunc(cmd.Segments, func(a, b raftstore.PartitionSegment) int { return int(a.Partition) - int(b.Partition) })
	return g.applyTopic(ctx, cmd)
}

func (g groupRoutes) CloseTopic(ctx context.Context, topic, from, to string) error {
	return g.applyTopic(ctx, raftstore.SetTopicPrimary{Topic: topic, Primary: raftstore.ProducerPrimary(to), From: raftstore.ProducerPrimary(from), CloseOpen: true})
}

func (g groupRoutes) applyTopic(ctx context.Context, cmd raftstore.SetTopicPrimary) error {
	res, err := g.store.Apply(ctx, cmd)
	if err == nil {
		err = g.readYourWrite(ctx, res)
	}
	if err == nil {
		err = res.Err
	}
	if err != nil {
		return fmt.Errorf("set topic %s primary %s → %s: %w", cmd.Topic, cmd.From, cmd.Primary, err)
	}
	return nil
}

// topicAPI serves /v1/topics/{topic} and its cutover and rollback.
type topicAPI struct {
	cutover *offsetsync.TopicCutover
	routes  groupRoutes
	log     *slog.Logger
	flips   *flipLog
}

func (a *topicAPI) register(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/topics/{topic}", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"topic": r.PathValue("topic"), "primary": a.routes.TopicPrimary(r.PathValue("topic"))})
	})
	mux.HandleFunc("POST /v1/topics/{topic}/cutover", func(w http.ResponseWriter, r *http.Request) { a.move(w, r, true) })
	mux.HandleFunc("POST /v1/topics/{topic}/rollback", func(w http.ResponseWriter, r *http.Request) { a.move(w, r, false) })
}

func (a *topicAPI) move(w http.ResponseWriter, r *http.Request, toTarget bool) {
	topic := r.PathValue("topic")
	if topic == "" {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "topic name required"})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Minute)
	defer cancel()
	start := time.Now()
	rep, err := a.cutover.Run(ctx, topic, toTarget, r.URL.Query().Get("force") == "true")
	a.flips.addTopic(map[bool]string{true: "cutover", false: "rollback"}[toTarget], start, rep, err)
	if err != nil {
		status := http.StatusInternalServerError
		switch {
		case errors.Is(err, offsetsync.ErrInProgress):
			status = http.StatusConflict
		case errors.Is(err, errVerifyRefused):
			status = http.StatusPreconditionFailed
		}
		writeJSON(w, status, map[string]any{"error": err.Error(), "report": rep})
		return
	}
	writeJSON(w, http.StatusOK, rep)
}

func (l *flipLog) addTopic(verb string, start time.Time, rep offsetsync.TopicReport, err error) {
	if l == nil {
		return
	}
	f := flip{Topic: rep.Topic, Verb: verb, From: rep.From, To: rep.To, Phase: rep.Primary, StartedAt: start,
		TookMs: time.Since(start).Milliseconds(), DrainMs: rep.Hold.Milliseconds(), Already: rep.AlreadyDone}
	if err != nil {
		f.Error = err.Error()
	}
	l.push(f)
}

// errVerifyRefused marks a flip refused because verify found a problem.
var errVerifyRefused = errors.New("verify refuses the flip (use --force to flip anyway)")

// verifyBeforeFlip is TopicCutover.Verify: the same comparison as
// `kmigrate verify --topic T`, refusing on a mismatch (lag is fine: the
// flip waits for the mirror itself). It runs before produces are held, and
// its settle ends as soon as the map names what the target held, so it
// keeps Verify's default bound (5 s) rather than 1 s: behind a slow target
// the mappings trail the target's end by a round trip and a poll, and the
// fault test with 200 ms of latency each way saw a flip refused for
// "records past the mapped end" that were the mirror's in-flight writes.
func verifyBeforeFlip(v *verifyAPI) func(ctx context.Context, topic string) error {
	return func(ctx context.Context, topic string) error {
		rep, err := offsetsync.Verify(ctx, offsetsync.VerifyConfig{
			Source: v.source, Target: v.target, Maps: v.maps, Topics: []string{topic},
		})
		if err != nil {
			return fmt.Errorf("verify %s: %w", topic, err)
		}
		if !rep.OK() {
			return fmt.Errorf("%w: %s", errVerifyRefused, strings.Join(rep.Problems(), "; "))
		}
		return nil
	}
}

// showProgress prints, every half second while a flip runs, the phase the
// route is in (read from GET path's field) and the time so far, on stderr so
// that --json output stays clean. The returned func stops it.
func showProgress(admin, token, path, field string, quiet bool) func() {
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		start := time.Now()
		tick := time.NewTicker(500 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			if quiet {
				continue
			}
			if v, ok := routeField(admin, token, path, field); ok {
				fmt.Fprintf(os.Stderr, "  … %s %s, %s\n", field, v, time.Since(start).Round(100*time.Millisecond))
			}
		}
	}()
	return func() { close(done); <-stopped }
}

// runTopicCommand is `kmigrate cutover topic T` and `kmigrate rollback topic T`.
func runTopicCommand(verb string, args []string) error {
	fs := flag.NewFlagSet("kmigrate "+verb, flag.ContinueOnError)
	admin := fs.String("admin", "127.0.0.1:9644", "admin address of a kmigrate proxy")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	force := fs.Bool("force", false, "flip even if `kmigrate verify` finds a mismatch")
	token := fs.String("admin-token", "", "bearer token of the admin API (default: $"+adminTokenEnv+")")
	if len(args) < 2 {
		return fmt.Errorf("usage: kmigrate %s topic TOPIC [--admin HOST:PORT] [--force] [--json]", verb)
	}
	topic := args[1]
	if err := fs.Parse(args[2:]); err != nil {
		return err
	}
	start := time.Now()
	path := fmt.Sprintf("/v1/topics/%s/%s", url.PathEscape(topic), verb)
	if *force {
		path += "?force=true"
	}
	stopProgress := showProgress(*admin, *token, "/v1/topics/"+url.PathEscape(topic), "primary", *asJSON)
	rep, body, err := postMove[offsetsync.TopicReport](*admin, *token, path)
	stopProgress()
	if *asJSON {
		os.Stdout.Write(body)
	}
	if err != nil {
		return fmt.Errorf("%s topic %s: %w", verb, topic, err)
	}
	if !*asJSON {
		if rep.AlreadyDone {
			fmt.Printf("topic %s already produces to the %s\n", topic, rep.To)
			return nil
		}
		fmt.Printf("topic %s: producers %s → %s, %d partitions, produces held %s, took %s\n",
			topic, rep.From, rep.To, rep.Partitions, rep.Hold.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	}
	return nil
}
