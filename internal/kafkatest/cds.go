package kafkatest

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
)

// EnvNoCDS disables the class-data-sharing archives when set to any value.
const EnvNoCDS = "KMIGRATE_KAFKA_NO_CDS"

// JVM start-up dominates broker start-up (loading and verifying thousands of
// classes from ~100 jars), so the harness keeps HotSpot AppCDS archives
// ("class data sharing") next to the jars: the first JVM of a kind dumps the
// classes it loaded when it exits (-XX:ArchiveClassesAtExit), later ones map
// that archive (-XX:SharedArchiveFile), which takes seconds off every broker
// start on a loaded 2-CPU machine. An archive that does not match the JVM or
// the jars is rejected by the JVM itself, which then simply runs without it;
// its name also includes a hash of the java binary and of the jars' download
// marker so that a new JDK or a refetch gets a new archive.

// cdsFlags returns the JVM flags for the archive called name (e.g. the main
// class) and a function to call with the JVM's process state once it has
// exited: it moves a freshly dumped archive into place if the JVM exited by
// itself (a JVM killed by a signal may have left a partial dump). With dump
// false an existing archive is used but none is created (for callers that
// cannot run the finish step).
func cdsFlags(libs, java, name string, dump bool) (flags []string, finish func(*os.ProcessState)) {
	noop := func(*os.ProcessState) {}
	if os.Getenv(EnvNoCDS) != "" {
		return nil, noop
	}
	dir := filepath.Join(filepath.Dir(libs), "cds")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, noop
	}
	final := filepath.Join(dir, name+"-"+cdsKey(libs, java)+".jsa")
	// Route the JVM's own warnings (CDS complains about old class file
	// versions while dumping) to stderr: by default they go to stdout, where
	// they would mix with a tool's output.
	logFlags := []string{"-Xlog:disable", "-Xlog:all=warning:stderr"}
	if st, err := os.Stat(final); err == nil && st.Size() > 0 {
		return append(logFlags, "-XX:SharedArchiveFile="+final), noop
	}
	if !dump {
		return logFlags, noop
	}
	// Several JVMs may dump at once: each writes its own file and the
	// rename makes one of them win atomically.
	var rnd [6]byte
	rand.Read(rnd[:])
	tmp := final + "." + hex.EncodeToString(rnd[:]) + ".tmp"
	return append(logFlags, "-XX:ArchiveClassesAtExit="+tmp), func(ps *os.ProcessState) {
		// Exited is false for a JVM ended by a signal; one that handled
		// SIGTERM itself exits (with status 143) after dumping.
		if st, err := os.Stat(tmp); err == nil && st.Size() > 0 && ps != nil && ps.Exited() {
			if os.Rename(tmp, final) == nil {
				return
			}
		}
		os.Remove(tmp)
	}
}

// cdsKey identifies the JVM and the jar set an archive was made from.
func cdsKey(libs, java string) string {
	h := sha256.New()
	h.Write([]byte(libs + "\x00" + java + "\x00"))
	if st, err := os.Stat(java); err == nil {
		h.Write([]byte(st.ModTime().String()))
	}
	if real, err := filepath.EvalSymlinks(java); err == nil {
		h.Write([]byte(real))
		if st, err := os.Stat(real); err == nil {
			h.Write([]byte(st.ModTime().String()))
		}
	}
	if marker, err := os.ReadFile(filepath.Join(filepath.Dir(libs), ".complete")); err == nil {
		h.Write(marker)
	}
	return hex.EncodeToString(h.Sum(nil))[:12]
}

// archiveName turns a main class into a file-name-safe archive name.
func archiveName(mainClass string) string {
	return strings.ReplaceAll(mainClass, ".", "_")
}
