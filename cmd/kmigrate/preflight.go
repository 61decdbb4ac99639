package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmigrate/kmigrate/preflight"
	"github.com/kmigrate/kmigrate/proxy"
)

// errNotReady makes preflight exit 1 after printing its report.
var errNotReady = errors.New("preflight found failures")

// runPreflight checks both clusters with the proxy's own settings (the same
// flags, --config file and KMIGRATE_* variables as `kmigrate proxy`), prints
// the report and fails when something blocks the migration.
func runPreflight(args []string, out io.Writer) error {
	fs, o := newProxyFlags()
	fs.Init("kmigrate preflight", fs.ErrorHandling())
	groups := fs.String("groups", "", "comma-separated consumer groups to be moved (default: the groups the source lists)")
	txnIDs := fs.String("transactional-ids", "", "comma-separated transactional ids of producers that will run behind the proxy")
	format := fs.String("format", "text", "text (a table) or json")
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprint(w, "Usage: kmigrate preflight [--config FILE.yaml] [flags]\n\n"+
			"Checks both clusters with the proxy's own settings (the same --config file, flags and\n"+
			"KMIGRATE_* variables as kmigrate proxy; other proxy flags are accepted and ignored).\n"+
			"Exits 1 when something blocks the migration. The flags that matter here:\n\n")
		fs.VisitAll(func(f *flag.Flag) {
			if preflightFlag(f.Name) {
				fmt.Fprintf(w, "  --%s\n    \t%s\n", f.Name, f.Usage)
			}
		})
	}
	if _, _, err := loadConfig(fs, args, os.LookupEnv, os.Environ()); err != nil {
		return err
	}
	if *format != "text" && *format != "json" {
		return fmt.Errorf("--format must be text or json, got %q", *format)
	}
	srcUp, err := o.source.build("source")
	if err != nil {
		return err
	}
	mirrorCfg, dstUp, err := o.mirror.build(slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	newClient := func(up proxy.Upstream) (*kgo.Client, error) {
		opts := append(kgoOpts(up), kgo.ClientID("kmigrate-preflight"),
			kgo.RetryTimeout(10*time.Second), kgo.DialTimeout(5*time.Second))
		cl, err := kgo.NewClient(opts...)
		if err != nil {
			return nil, fmt.Errorf("%s client: %w", up.Name, err)
		}
		return cl, nil
	}
	src, err := newClient(srcUp)
	if err != nil {
		return err
	}
	defer src.Close()
	cfg := preflight.Config{
		Source:           preflight.Cluster{Name: "source", Client: src, Auth: o.source.describeAuth()},
		Topics:           func(string) bool { return true },
		NamedTopics:      literalTopics(o.mirror.topics),
		Groups:           splitList(*groups),
		TransactionalIDs: splitList(*txnIDs),
	}
	if mirrorCfg != nil {
		dst, err := newClient(dstUp)
		if err != nil {
			return err
		}
		defer dst.Close()
		cfg.Target = &preflight.Cluster{Name: "target", Client: dst, Auth: o.mirror.target.describeAuth()}
		cfg.Topics = mirrorCfg.Topics.Matches
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	rep := preflight.Run(ctx, cfg)
	if *format == "json" {
		err = rep.WriteJSON(out)
	} else {
		err = rep.WriteText(out)
	}
	if err != nil {
		return err
	}
	if rep.Count(preflight.Fail) > 0 {
		return errNotReady
	}
	return nil
}

// preflightFlag reports whether a proxy flag changes what preflight checks.
func preflightFlag(name string) bool {
	for _, prefix := range []string{"source-", "target-", "topics", "exclude-topics", "config", "groups", "transactional-ids", "format"} {
		if strings.HasPrefix(name, prefix) {
			return true
		}
	}
	return false
}

// describeAuth says how the proxy authenticates to a cluster, for reports;
// it names the user, never the secret.
func (u *upstreamFlags) describeAuth() string {
	transport := "plaintext"
	if u.tls || u.tlsCA != "" || u.tlsCert != "" {
		transport = "TLS"
		if u.tlsCert != "" {
			transport = "mTLS"
		}
	}
	if u.saslMechanism == "" {
		return transport + ", no SASL"
	}
	who := ""
	if u.saslUser != "" {
		who = " as " + u.saslUser
	}
	return fmt.Sprintf("%s, %s%s", transport, strings.ToUpper(u.saslMechanism), who)
}

// literalName is a topic name as a regular expression matches it: dots may
// be escaped or not (an unescaped dot matches itself too).
var literalName = regexp.MustCompile(`^(?:[A-Za-z0-9_-]|\\?\.)+$`)

// literalTopics returns the topic names an alternation of plain names
// spells out ("orders|payments\.v2"), so preflight can ask for them even
// when the principal may not see them; nil for any other expression.
func literalTopics(expr string) []string {
	var names []string
	for _, alt := range strings.Split(expr, "|") {
		if !literalName.MatchString(alt) {
			return nil
		}
		names = append(names, strings.ReplaceAll(alt, `\.`, "."))
	}
	return names
}

func splitList(s string) []string {
	var out []string
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	return out
}
