package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
)

// version is set for releases with -ldflags "-X main.version=v1.2.3"; other
// builds describe themselves from the build information the Go toolchain
// embeds (module version, VCS revision and time).
var version = ""

// versionLine is what "kmigrate version" prints, e.g.
// "kmigrate v1.2.3 (revision 1a2b3c4d5e6f, 2026-01-02T15:04:05Z, modified) go1.26.0 linux/amd64".
func versionLine() string {
	info, _ := debug.ReadBuildInfo()
	return formatVersion(version, info)
}

func formatVersion(release string, info *debug.BuildInfo) string {
	v := release
	var details []string
	if info != nil {
		if v == "" && info.Main.Version != "" && info.Main.Version != "(devel)" {
			v = info.Main.Version // go install …@v1.2.3, or a VCS pseudo-version
		}
		settings := map[string]string{}
		for _, s := range info.Settings {
			settings[s.Key] = s.Value
		}
		if rev := settings["vcs.revision"]; rev != "" {
			details = append(details, "revision "+rev[:min(12, len(rev))])
		}
		if t := settings["vcs.time"]; t != "" {
			details = append(details, t)
		}
		if settings["vcs.modified"] == "true" {
			details = append(details, "modified")
		}
	}
	if v == "" {
		v = "dev"
	}
	line := "kmigrate " + v
	if len(details) > 0 {
		line += " (" + strings.Join(details, ", ") + ")"
	}
	return fmt.Sprintf("%s %s %s/%s", line, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
