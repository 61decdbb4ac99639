package main

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
)

// The sidecar CPU layout (-pin). On one machine the broker, the load
// generator and the proxy share the CPUs, so every CPU second the proxy
// spends is taken from the broker as much as from the client. A sidecar
// proxy runs on its application's host, and the brokers on their own:
// -pin gives the broker (every broker JVM) CPU 0 to itself and puts this
// program, the load generator inside it, and the proxy it starts on the
// other CPUs. Both sides of every comparison run in the same layout.

// pinLayout describes the layout for the report.
func pinLayout() string {
	return fmt.Sprintf("sidecar layout (-pin): broker JVMs on CPU 0, the load generator and the proxy on CPUs %s", clientCPUs())
}

// clientCPUs are the CPUs left to the load generator and the proxy.
func clientCPUs() string {
	if n := runtime.NumCPU(); n > 2 {
		return fmt.Sprintf("1-%d", n-1)
	}
	return "1"
}

// pinSelf moves every thread of this process to the client CPUs; the
// processes it starts later (the proxy, the relay, Java tools) inherit it.
func pinSelf() error {
	if runtime.NumCPU() < 2 {
		return fmt.Errorf("-pin needs at least 2 CPUs, this machine has %d", runtime.NumCPU())
	}
	return setAffinity(os.Getpid(), clientCPUs())
}

// pinBroker moves every thread of a broker JVM to CPU 0.
func pinBroker(pid int) error { return setAffinity(pid, "0") }

// setAffinity runs taskset on all threads of pid (taskset -a: a Go
// program's or a JVM's threads each have their own mask).
func setAffinity(pid int, cpus string) error {
	path, err := exec.LookPath("taskset")
	if err != nil {
		return fmt.Errorf("-pin needs taskset (Debian package util-linux): %w", err)
	}
	out, err := exec.Command(path, "-a", "-p", "-c", cpus, fmt.Sprint(pid)).CombinedOutput()
	if err != nil {
		return fmt.Errorf("taskset -a -p -c %s %d: %w: %s", cpus, pid, err, strings.TrimSpace(string(out)))
	}
	return nil
}
