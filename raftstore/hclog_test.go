package raftstore

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
)

func TestHCLogAdapter(t *testing.T) {
	var buf bytes.Buffer
	l := newHCLog(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})), slog.LevelInfo)
	l.Debug("dropped below the level")
	l.Named("snapshot").With("k", "v").Warn("kept", "n", 1)
	l.StandardLogger(&hclog.StandardLoggerOptions{ForceLevel: hclog.Error}).Print("from the standard logger")
	out := buf.String()
	if strings.Contains(out, "dropped") {
		t.Errorf("debug message passed an info threshold: %s", out)
	}
	for _, want := range []string{"level=WARN msg=kept logger=raft.snapshot k=v n=1", "level=ERROR msg=\"from the standard logger\""} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if l.IsDebug() || !l.IsInfo() {
		t.Error("level checks wrong")
	}
	l.SetLevel(hclog.Debug)
	if !l.IsDebug() {
		t.Error("SetLevel ignored")
	}
}
