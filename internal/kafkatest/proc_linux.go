//go:build linux

package kafkatest

import "syscall"

// sysProcAttr puts the JVM in its own process group, so that Stop and Kill
// reach anything it forks, and asks the kernel to SIGKILL it when the test
// binary dies, so that a broker never outlives the tests even when the test
// binary is killed or crashes before its cleanups run.
//
// Pdeathsig fires when the OS thread that forked the child exits, not only
// the process. The Go runtime never retires its threads except for a
// goroutine that exits while locked with runtime.LockOSThread, so for this
// package that means the process.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
