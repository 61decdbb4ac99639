//go:build unix && !linux

package kafkatest

import "syscall"

// sysProcAttr puts the JVM in its own process group. Only Linux offers a
// parent-death signal; elsewhere RunMain and test cleanups stop the brokers.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
