package main

import (
	"runtime/debug"
	"strings"
	"testing"
)

func TestVersion(t *testing.T) {
	vcs := &debug.BuildInfo{
		Main: debug.Module{Path: "github.com/kmigrate/kmigrate", Version: "(devel)"},
		Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "1a2b3c4d5e6f7a8b9c0d"},
			{Key: "vcs.time", Value: "2026-01-02T15:04:05Z"},
			{Key: "vcs.modified", Value: "true"},
		},
	}
	for _, c := range []struct {
		name    string
		release string
		info    *debug.BuildInfo
		want    string
	}{
		{"release", "v1.2.3", vcs, "kmigrate v1.2.3 (revision 1a2b3c4d5e6f, 2026-01-02T15:04:05Z, modified) go"},
		{"source checkout", "", vcs, "kmigrate dev (revision 1a2b3c4d5e6f, 2026-01-02T15:04:05Z, modified) go"},
		{"go install", "", &debug.BuildInfo{Main: debug.Module{Version: "v0.4.0"}}, "kmigrate v0.4.0 go"},
		{"no build info", "", nil, "kmigrate dev go"},
	} {
		if got := formatVersion(c.release, c.info); !strings.HasPrefix(got, c.want) {
			t.Errorf("%s: %q, want it to start with %q", c.name, got, c.want)
		}
	}
	if got := versionLine(); !strings.HasPrefix(got, "kmigrate ") {
		t.Errorf("versionLine() = %q", got)
	}
}
