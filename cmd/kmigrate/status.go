package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"
)

// runStatus is `kmigrate status`: GET /v1/status as tables, or as JSON.
func runStatus(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("kmigrate status", flag.ContinueOnError)
	admin := fs.String("admin", "127.0.0.1:9644", "admin address of a kmigrate proxy")
	token := fs.String("admin-token", "", "bearer token of the admin API (default: $"+adminTokenEnv+")")
	asJSON := fs.Bool("json", false, "print the status as JSON (the API's answer)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("usage: kmigrate status [--admin HOST:PORT] [--admin-token T] [--json]")
	}
	resp, err := newAdminClient(*admin, *token).do(http.MethodGet, "/v1/status")
	if err != nil {
		return fmt.Errorf("status: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("status: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status: %s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	if *asJSON {
		_, err := stdout.Write(body)
		return err
	}
	var st Status
	if err := json.Unmarshal(body, &st); err != nil {
		return fmt.Errorf("status: bad answer from %s: %w", *admin, err)
	}
	printStatus(stdout, st)
	return nil
}

func printStatus(out io.Writer, st Status) {
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	target := "none (pass-through)"
	if len(st.Clusters.Target) > 0 {
		target = strings.Join(st.Clusters.Target, ",")
	}
	fmt.Fprintf(w, "node %s\tleader %s\tapplied index %d\n", st.Node, orDash(st.Leader), st.AppliedIndex)
	fmt.Fprintf(w, "source %s\ttarget %s\n", strings.Join(st.Clusters.Source, ","), target)
	w.Flush()

	fmt.Fprintln(out, "\nNODES")
	fmt.Fprintln(w, "ID\tADDRESS\tROLE\tAPPLIED\tLIVE\tREPORTED")
	for _, n := range st.Nodes {
		role := "non-voter"
		switch {
		case n.Leader:
			role = "leader"
		case n.Voter:
			role = "voter"
		}
		if n.Writer {
			role += ",writer"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%v\t%s\n", n.ID, orDash(n.Address), role, n.Applied, n.Live, since(st.Time, n.ReportedAt))
	}
	w.Flush()

	fmt.Fprintln(out, "\nTOPICS")
	if len(st.Topics) == 0 {
		fmt.Fprintln(out, "(none mirrored)")
	} else {
		fmt.Fprintln(w, "TOPIC\tPRODUCERS\tPARTITIONS\tLAG RECORDS\tLAG MS\tWRITERS")
		for _, t := range st.Topics {
			writers := map[string]bool{}
			var names []string
			for _, p := range t.Partitions {
				name := orDash(p.Writer)
				if !writers[name] {
					writers[name] = true
					names = append(names, name)
				}
			}
			fmt.Fprintf(w, "%s\t%s\t%d\t%d\t%d\t%s\n", t.Topic, t.Producers, len(t.Partitions), t.LagRecords, t.LagMs, strings.Join(names, ","))
		}
		w.Flush()
	}

	fmt.Fprintln(out, "\nGROUPS")
	if len(st.Groups) == 0 {
		fmt.Fprintln(out, "(none moved yet: every group is on the source)")
	} else {
		fmt.Fprintln(w, "GROUP\tPHASE\tEPOCH\tCHANGED\tAPPLIED EVERYWHERE")
		for _, g := range st.Groups {
			fmt.Fprintf(w, "%s\t%s\t%d\t%s\t%v\n", g.Group, g.Phase, g.Epoch, since(st.Time, g.ChangedAt), g.Complete)
		}
		w.Flush()
	}

	if len(st.Flips) > 0 {
		fmt.Fprintln(out, "\nRECENT FLIPS (through this node)")
		fmt.Fprintln(w, "WHEN\tGROUP\tMOVE\tRESULT\tTOOK\tREJOINED")
		for _, f := range st.Flips {
			result := f.Phase
			switch {
			case f.Error != "":
				result = "failed: " + f.Error
			case f.Already:
				result = "already there"
			}
			fmt.Fprintf(w, "%s\t%s\t%s %s→%s\t%s\t%dms\t%d/%d\n", since(st.Time, f.StartedAt), f.Group, f.Verb, f.From, f.To, result, f.TookMs, f.Rejoined, f.Members)
		}
		w.Flush()
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// since is how long before now t was, for tables.
func since(now, t time.Time) string {
	if t.IsZero() || t.Unix() <= 0 {
		return "-"
	}
	return now.Sub(t).Round(time.Second).String() + " ago"
}
