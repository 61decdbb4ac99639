// Package preflight checks, before anything is mirrored, that kmigrate can
// do its work on both clusters: it connects and authenticates to each, the
// brokers speak the API versions the proxy needs, the proxy's own principal
// holds the ACLs that the mirror, the proxied clients and the cutovers use,
// and the target's topics can take the source's records in order.
//
// Every check only reads, except CreateTopics with validate_only set, which
// the broker authorizes and validates without creating anything.
package preflight

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Status grades a finding.
type Status string

const (
	OK   Status = "ok"
	Warn Status = "WARN" // works, but not as an operator would expect
	Fail Status = "FAIL" // the migration cannot work until this is fixed
)

// Finding is one line of the report.
type Finding struct {
	Status  Status `json:"status"`
	Cluster string `json:"cluster"` // "source" or "target"
	Check   string `json:"check"`   // connect, api, acl, topic, group
	Subject string `json:"subject"` // what was checked: "topic orders", "group billing"
	Detail  string `json:"detail"`  // what was found and, for problems, what to do
}

// Report is the outcome of Run, in the order the checks ran.
type Report struct {
	Findings []Finding `json:"findings"`
}

// Count returns how many findings have status s.
func (r Report) Count(s Status) int {
	n := 0
	for _, f := range r.Findings {
		if f.Status == s {
			n++
		}
	}
	return n
}

// WriteText prints the report as an aligned table and a verdict line.
func (r Report) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STATUS\tCLUSTER\tCHECK\tSUBJECT\tDETAIL")
	for _, f := range r.Findings {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", f.Status, f.Cluster, f.Check, f.Subject, f.Detail)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fails, warns := r.Count(Fail), r.Count(Warn)
	verdict := "ready: nothing blocks the migration"
	if fails > 0 {
		verdict = "not ready: fix the failures before starting the mirror"
	}
	_, err := fmt.Fprintf(w, "\n%d %s, %d %s: %s\n", fails, plural(fails, "failure"), warns, plural(warns, "warning"), verdict)
	return err
}

// WriteJSON prints the report as one JSON object.
func (r Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(struct {
		OK       bool      `json:"ok"`
		Failures int       `json:"failures"`
		Warnings int       `json:"warnings"`
		Findings []Finding `json:"findings"`
	}{r.Count(Fail) == 0, r.Count(Fail), r.Count(Warn), r.Findings})
}

func plural(n int, word string) string {
	if n == 1 {
		return word
	}
	return word + "s"
}

// Cluster is one side of the migration as the proxy reaches it: the client
// carries the proxy's own TLS and SASL settings, so the ACLs checked are
// the ones of the principal the proxy will run as.
type Cluster struct {
	Name   string // "source" or "target"
	Client *kgo.Client
	// Auth describes how the client authenticates ("SCRAM-SHA-512 as
	// migrator", "no SASL"), for the messages; never a secret.
	Auth string
}

// Config says what to check.
type Config struct {
	Source Cluster
	Target *Cluster // nil: a pass-through proxy, only the source is checked
	// Topics selects the topics in scope, as the mirror's --topics and
	// --exclude-topics do.
	Topics func(topic string) bool
	// NamedTopics are topic names the selection spells out literally: they
	// are checked even when the principal cannot see them, because a
	// topic without DESCRIBE is invisible in a listing.
	NamedTopics []string
	// Groups are consumer groups that will be moved; empty means the
	// groups the source lists (at most MaxListedGroups).
	Groups []string
	// TransactionalIDs are transactional ids of producers behind the
	// proxy.
	TransactionalIDs []string
}

// MaxListedGroups bounds the groups checked when Config.Groups is empty.
const MaxListedGroups = 100

// Run runs every check and returns the findings. It does not stop at the
// first failure: an operator fixes a list of ACLs in one go.
func Run(ctx context.Context, cfg Config) Report {
	r := &run{cfg: cfg}
	src := r.connect(ctx, cfg.Source)
	var dst *clusterInfo
	if cfg.Target != nil {
		dst = r.connect(ctx, *cfg.Target)
	}
	if src != nil {
		r.apiVersions(src, false)
	}
	if dst != nil {
		r.apiVersions(dst, true)
	}
	if src != nil {
		r.topics(ctx, src, dst)
		r.groups(ctx, src, dst)
		r.transactionalIDs(ctx, src, dst)
	}
	return Report{Findings: r.findings}
}

type run struct {
	cfg      Config
	findings []Finding
}

func (r *run) add(s Status, cluster, check, subject, detail string, args ...any) {
	if len(args) > 0 {
		detail = fmt.Sprintf(detail, args...)
	}
	r.findings = append(r.findings, Finding{Status: s, Cluster: cluster, Check: check, Subject: subject, Detail: detail})
}

// aclCLIName turns kmsg's "DESCRIBE_CONFIGS" into kafka-acls.sh's
// "DescribeConfigs", so the operator can paste it into --operation.
func aclCLIName(s string) string {
	var b strings.Builder
	for _, word := range strings.Split(strings.ToLower(s), "_") {
		if word == "" {
			continue
		}
		b.WriteString(strings.ToUpper(word[:1]) + word[1:])
	}
	return b.String()
}
