// Command pause is the e2e node's pod sandbox process (containerd's
// sandbox_image), the test-only counterpart of registry.k8s.io/pause: it holds
// the pod's namespaces, reaps orphaned children (it is PID 1 of the pod when
// the pod shares its PID namespace), and exits 0 on SIGTERM or SIGINT. It is
// never shipped.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for s := range sigs {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var ws syscall.WaitStatus
			if pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil); pid <= 0 || err != nil {
				break
			}
		}
	}
}
