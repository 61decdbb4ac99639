package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// tracked is a process whose CPU time the benchmark reports per GB moved.
type tracked struct {
	label string // "proxy", "broker"
	pid   int
	// onlySide, when set, charges the process only on runs of that side
	// (the proxy idles while the direct side runs).
	onlySide string
}

// usage is what the machine's CPUs did during one run.
type usage struct {
	wall time.Duration
	proc map[string]time.Duration // by tracked label
	// foreign is CPU used by processes that are not this benchmark, its
	// broker or its proxy (other work on a shared machine), in cores
	// averaged over the run; steal is CPU the hypervisor took, in cores.
	foreign, steal float64
}

type snapshot struct {
	at          time.Time
	busy, steal time.Duration // whole machine
	own         time.Duration // this process and its descendants, live or reaped
	proc        map[string]time.Duration
}

func takeSnapshot(procs []tracked) (snapshot, error) {
	s := snapshot{at: time.Now(), proc: map[string]time.Duration{}}
	var err error
	if s.busy, s.steal, err = machineCPU(); err != nil {
		return s, err
	}
	// Children that exited during the run (a Kafka CLI tool, say) have
	// their CPU in their parent's cutime/cstime once reaped.
	for _, pid := range append([]int{os.Getpid()}, descendants(os.Getpid())...) {
		if c, r, err := procCPUs(pid); err == nil { // a child may just have exited
			s.own += c + r
		}
	}
	for _, p := range procs {
		c, err := procCPU(p.pid)
		if err != nil {
			return s, fmt.Errorf("CPU time of %s (pid %d): %w", p.label, p.pid, err)
		}
		s.proc[p.label] = c
	}
	return s, nil
}

func between(a, b snapshot, procs []tracked) usage {
	u := usage{wall: b.at.Sub(a.at), proc: map[string]time.Duration{}}
	for _, p := range procs {
		u.proc[p.label] = b.proc[p.label] - a.proc[p.label]
	}
	// Tracked processes outside our tree (an external proxy given with
	// -proxy-pid) are not foreign either.
	own := b.own - a.own
	for _, p := range procs {
		if !isDescendant(p.pid) {
			own += u.proc[p.label]
		}
	}
	if secs := u.wall.Seconds(); secs > 0 {
		u.foreign = max(0, (b.busy-a.busy-own).Seconds()/secs)
		u.steal = (b.steal - a.steal).Seconds() / secs
	}
	return u
}

// machineCPU reads the busy and steal time of all CPUs from /proc/stat.
func machineCPU() (busy, steal time.Duration, err error) {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	line, err := bufio.NewReader(f).ReadString('\n')
	if err != nil {
		return 0, 0, err
	}
	return parseProcStat(line)
}

func parseProcStat(line string) (busy, steal time.Duration, err error) {
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, 0, fmt.Errorf("unexpected /proc/stat line %q", line)
	}
	var v [8]int64 // user nice system idle iowait irq softirq steal
	for i := range v {
		if v[i], err = strconv.ParseInt(f[i+1], 10, 64); err != nil {
			return 0, 0, fmt.Errorf("unexpected /proc/stat line %q: %w", line, err)
		}
	}
	ticks := v[0] + v[1] + v[2] + v[5] + v[6]
	return time.Duration(ticks) * time.Second / clockTicks, time.Duration(v[7]) * time.Second / clockTicks, nil
}

// descendants lists the pids below pid, from /proc/<pid>/task/*/children.
func descendants(pid int) []int {
	var out []int
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(b)) {
			if c, err := strconv.Atoi(f); err == nil {
				out = append(out, c)
				out = append(out, descendants(c)...)
			}
		}
	}
	return out
}

func isDescendant(pid int) bool {
	for _, d := range descendants(os.Getpid()) {
		if d == pid {
			return true
		}
	}
	return false
}

// findBrokers returns the pids of the Kafka broker JVMs among this process's
// descendants (the harness starts them), in start order.
func findBrokers() []int {
	var pids []int
	for _, pid := range descendants(os.Getpid()) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil {
			continue
		}
		args := bytes.Split(bytes.TrimRight(b, "\x00"), []byte{0})
		if len(args) > 0 && filepath.Base(string(args[0])) == "java" && bytes.Equal(args[len(args)-2], []byte("kafka.Kafka")) {
			pids = append(pids, pid)
		}
	}
	return pids
}
