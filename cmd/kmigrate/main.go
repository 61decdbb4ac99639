// Command kmigrate is the kmigrate binary: a Kafka-protocol proxy that moves
// live applications from one Kafka cluster to another.
package main

import (
	"fmt"
	"os"
	"runtime/debug"
)

const usage = `kmigrate: move live Kafka applications between clusters.

Usage:
  kmigrate demo             a whole migration on embedded clusters, with a verdict
  kmigrate proxy [flags]    serve clients in front of the source cluster
                            (--config FILE.yaml, KMIGRATE_* variables; --print-config)
  kmigrate cutover group G  move consumer group G to the target cluster
  kmigrate rollback group G move consumer group G back to the source
  kmigrate cutover topic T  move topic T's producers to the target (holds produces briefly)
  kmigrate rollback topic T move topic T's producers back to the source
  kmigrate status           nodes, mirrored topics with lag, groups (--json for scripts)
  kmigrate verify           compare source and target through the offset map; exit 1 on a mismatch
  kmigrate preflight        check both clusters before mirroring: login, API versions, the
                            proxy principal's ACLs, topic mismatches; exit 1 on a failure
  kmigrate version          print the version, VCS revision and Go version
  kmigrate scram-credential SCRAM hashes of a password (stdin) for --client-sasl-credentials

Run "kmigrate <command> -h" for the flags of a command.
`

func main() {
	if os.Getenv("GOGC") == "" {
		// The proxy's garbage is mostly large, short-lived frames (fetch
		// answers); collecting less often costs little memory and saves
		// CPU on the data path. GOGC in the environment still wins.
		debug.SetGCPercent(400)
	}
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "proxy":
		err = runProxy(os.Args[2:])
	case "demo":
		err = runDemo(os.Args[2:])
	case "cutover", "rollback":
		if len(os.Args) > 2 && os.Args[2] == "topic" {
			err = runTopicCommand(os.Args[1], os.Args[2:])
		} else {
			err = runGroupCommand(os.Args[1], os.Args[2:])
		}
	case "status":
		err = runStatus(os.Args[2:], os.Stdout)
	case "verify":
		err = runVerify(os.Args[2:], os.Stdout)
	case "preflight":
		err = runPreflight(os.Args[2:], os.Stdout)
	case "scram-credential":
		err = runSCRAMCredential(os.Args[2:], os.Stdin, os.Stdout)
	case "version", "--version":
		fmt.Println(versionLine())
	case "-h", "--help", "help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "kmigrate: unknown command %q\n\n%s", os.Args[1], usage)
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "kmigrate:", err)
		os.Exit(1)
	}
}
