//go:build unix

package kafkatest

import (
	"os"
	"syscall"
)

// signalGroup sends sig to the process group led by p (see sysProcAttr), and
// to p itself in case the group is already gone.
func signalGroup(p *os.Process, sig syscall.Signal) {
	_ = syscall.Kill(-p.Pid, sig)
	_ = p.Signal(sig)
}
