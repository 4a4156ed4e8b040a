package testenv

import "syscall"

// sysProcAttr puts a child in its own process group and kills it if the
// test binary dies without cleaning up (a panic or a test timeout).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
