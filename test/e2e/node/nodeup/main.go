// Command nodeup starts the e2e node (package test/e2e/node) for manual
// work and keeps it until Ctrl-C (or -for elapses), then stops it and
// removes everything it made. It needs root; run it from the repository:
//
//	sudo go run ./test/e2e/node/nodeup
//	export KUBECONFIG=<printed path>; bin/k8s/kubectl get nodes
//
// A run killed before it could stop is cleaned up by the next start;
// -cleanup does only that. -host-state prints the host state the node could
// change (node.SnapshotHost), to diff before and after:
//
//	go run ./test/e2e/node/nodeup -host-state > before.txt
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/remora-mesh/remora/test/e2e/node"
)

func main() {
	limit := flag.Duration("for", 2*time.Hour, "stop by itself after this long")
	hostState := flag.Bool("host-state", false, "print the host state a node could change, and exit")
	cleanup := flag.Bool("cleanup", false, "remove what killed runs left behind, and exit")
	flag.Parse()
	if *hostState {
		h, err := node.SnapshotHost("")
		if err != nil {
			log.Fatal(err)
		}
		fmt.Print(h)
		return
	}
	if *cleanup {
		if err := node.Cleanup(context.Background(), node.Options{Logf: log.Printf}); err != nil {
			log.Fatal(err)
		}
		return
	}
	if err := node.Check(node.Options{}); err != nil {
		log.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	c, err := node.Start(ctx, node.Options{Logf: log.Printf})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("node %s Ready (%s)\n  KUBECONFIG=%s\n  kubectl: %s/kubectl\n  pods reachable from this host on %s (bridge %s)\nCtrl-C stops it.\n",
		c.NodeName, c.Timings, c.Kubeconfig, c.K8sBinDir, c.Subnet, c.Bridge)
	select {
	case <-ctx.Done():
	case <-time.After(*limit):
	}
	if err := c.Stop(); err != nil {
		log.Fatal(err)
	}
}
