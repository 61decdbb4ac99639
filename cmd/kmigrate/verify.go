package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kmigrate/kmigrate/offsetsync"
	"github.com/kmigrate/kmigrate/raftstore"
	"github.com/twmb/franz-go/pkg/kgo"
)

// maxChecksumRecords bounds ?records=: the records are read from both
// clusters and held (as hashes) while the request runs.
const maxChecksumRecords = 1_000_000

// verifyAPI serves GET /v1/verify: offsetsync.Verify over this node's
// clusters and the replicated maps.
type verifyAPI struct {
	source, target *kgo.Client // nil without a target: nothing to verify
	maps           func(topic string, partition int32) offsetsync.OffsetMap
	state          func() raftstore.Reader
}

// VerifyAnswer is the answer of GET /v1/verify: the report and its verdict.
type VerifyAnswer struct {
	OK bool `json:"ok"`
	offsetsync.VerifyReport
}

func (a *verifyAPI) register(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/verify", a.serve)
}

func (a *verifyAPI) serve(w http.ResponseWriter, r *http.Request) {
	if a.target == nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "this node has no target cluster (--target-bootstrap): nothing to verify"})
		return
	}
	q := r.URL.Query()
	cfg := offsetsync.VerifyConfig{Source: a.source, Target: a.target, Maps: a.maps, Topics: q["topic"], Groups: q["group"]}
	if s := q.Get("records"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 || n > maxChecksumRecords {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": fmt.Sprintf("records=%q: want a number of records from 0 (no checksum) to %d", s, maxChecksumRecords)})
			return
		}
		cfg.ChecksumRecords = n
		if n == 0 {
			cfg.ChecksumRecords = -1 // Verify's zero value is its default
		}
	}
	if slices.Contains(cfg.Topics, "") || slices.Contains(cfg.Groups, "") {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "empty topic or group name"})
		return
	}
	if len(cfg.Topics) == 0 {
		cfg.Topics = mirroredTopics(a.state())
		if len(cfg.Topics) == 0 {
			writeJSON(w, http.StatusOK, VerifyAnswer{OK: true, VerifyReport: offsetsync.VerifyReport{
				Time: time.Now().UTC(), Partitions: []offsetsync.PartitionVerify{}, Groups: []offsetsync.GroupVerify{}}})
			return
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Minute)
	defer cancel()
	rep, err := offsetsync.Verify(ctx, cfg)
	if err != nil {
		status := http.StatusBadGateway // a cluster did not answer
		if errors.Is(err, offsetsync.ErrUnknownTopic) {
			status = http.StatusNotFound
		}
		writeJSON(w, status, map[string]string{"error": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, VerifyAnswer{OK: rep.OK(), VerifyReport: rep})
}

// mirroredTopics are the topics the control plane assigns mirror writers
// to, or has routes for: what a bare verify checks.
func mirroredTopics(st raftstore.Reader) []string {
	var topics []string
	for _, w := range st.Writers() {
		topics = append(topics, w.Topic)
	}
	for _, t := range st.Topics() {
		topics = append(topics, t.Topic)
	}
	slices.Sort(topics)
	return slices.Compact(topics)
}

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(s string) error { *l = append(*l, s); return nil }

// runVerify is `kmigrate verify`: GET /v1/verify as tables, or as JSON. It
// fails (exit status 1) when a partition refuses a cutover.
func runVerify(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("kmigrate verify", flag.ContinueOnError)
	admin := fs.String("admin", "127.0.0.1:9644", "admin address of a kmigrate proxy")
	token := fs.String("admin-token", "", "bearer token of the admin API (default: $"+adminTokenEnv+")")
	asJSON := fs.Bool("json", false, "print the report as JSON (the API's answer)")
	records := fs.Int("records", offsetsync.DefaultChecksumRecords, "last mapped records per partition read from both clusters and compared; 0 compares offsets only")
	var topics, groups stringList
	fs.Var(&topics, "topic", "topic to verify (repeatable; default: every mirrored topic)")
	fs.Var(&groups, "group", "group whose commits to list (repeatable; default: every group committing to the topics)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("usage: kmigrate verify [--topic T ...] [--group G ...] [--records N] [--json] [--admin HOST:PORT] [--admin-token T]")
	}
	q := url.Values{"topic": topics, "group": groups}
	q.Set("records", strconv.Itoa(*records))
	resp, err := newAdminClient(*admin, *token).do(http.MethodGet, "/v1/verify?"+q.Encode())
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct{ Error string }
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			return fmt.Errorf("verify: %s: %s", resp.Status, e.Error)
		}
		return fmt.Errorf("verify: %s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	var ans VerifyAnswer
	if err := json.Unmarshal(body, &ans); err != nil {
		return fmt.Errorf("verify: bad answer from %s: %w", *admin, err)
	}
	if *asJSON {
		if _, err := stdout.Write(body); err != nil {
			return err
		}
	} else {
		printVerify(stdout, ans)
	}
	if !ans.OK {
		return fmt.Errorf("verify: %d partitions refuse a cutover", len(ans.Problems()))
	}
	return nil
}

func printVerify(out io.Writer, ans VerifyAnswer) {
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(out, "PARTITIONS")
	if len(ans.Partitions) == 0 {
		fmt.Fprintln(out, "(no mirrored topic)")
	} else {
		fmt.Fprintln(w, "TOPIC\tPARTITION\tVERDICT\tSOURCE\tTARGET\tMAPPED (SOURCE/TARGET)\tLAG\tCHECKED\tREASON")
		for _, p := range ans.Partitions {
			reason := p.Reason
			if p.Note != "" {
				reason = strings.TrimPrefix(reason+"; "+p.Note, "; ")
			}
			fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%s\t%s/%s\t%d\t%d\t%s\n", p.Topic, p.Partition, strings.ToUpper(string(p.Verdict)),
				offsetRange(p.Source.LogStart, p.Source.End), offsetRange(p.Target.LogStart, p.Target.End),
				offsetRange(p.Source.MappedFrom, p.Source.MappedEnd), offsetRange(p.Target.MappedFrom, p.Target.MappedEnd),
				p.Lag, p.Checked, orDash(reason))
		}
		w.Flush()
	}

	fmt.Fprintln(out, "\nGROUPS (committed positions; source translated through the map)")
	if len(ans.Groups) == 0 {
		fmt.Fprintln(out, "(none commits to these topics)")
	} else {
		fmt.Fprintln(w, "GROUP\tTOPIC\tPARTITION\tSOURCE\tSOURCE ON TARGET\tTARGET\tIN SYNC\tNOTE")
		for _, g := range ans.Groups {
			if g.Error != "" {
				fmt.Fprintf(w, "%s\t-\t-\t-\t-\t-\t-\t%s\n", g.Group, g.Error)
			}
			for _, p := range g.Partitions {
				fmt.Fprintf(w, "%s\t%s\t%d\t%s\t%s\t%s\t%v\t%s\n", g.Group, p.Topic, p.Partition,
					offsetOrDash(p.Source), offsetOrDash(p.SourceOnTarget), offsetOrDash(p.Target), p.InSync, orDash(p.Note))
			}
		}
		w.Flush()
	}

	counts := map[offsetsync.Verdict]int{}
	for _, p := range ans.Partitions {
		counts[p.Verdict]++
	}
	var parts []string
	for _, v := range []offsetsync.Verdict{offsetsync.VerifyOK, offsetsync.VerifyLag, offsetsync.VerifyMismatch, offsetsync.VerifyUnmapped, offsetsync.VerifyError} {
		if counts[v] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", counts[v], v))
		}
	}
	verdict := "OK: a cutover may proceed"
	if !ans.OK {
		verdict = "REFUSED: a cutover would refuse"
	}
	fmt.Fprintf(out, "\n%s (%s; %d records compared per partition at most)\n", verdict, strings.Join(parts, ", "), ans.ChecksumRecords)
}

// offsetRange prints a half-open offset range; "-" when the side has none.
func offsetRange(from, end int64) string {
	if from < 0 || end < 0 {
		return "-"
	}
	return fmt.Sprintf("%d..%d", from, end)
}

func offsetOrDash(o int64) string {
	if o < 0 {
		return "-"
	}
	return strconv.FormatInt(o, 10)
}
