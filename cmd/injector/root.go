package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/remora-mesh/remora/pkg/version"
)

// newRootCmd builds the injector's command tree. Each subcommand lives in a
// file of its own beside this one; this is the one list of them.
func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "injector",
		Short: "Remora: an Istio-compatible sidecar injector",
		Long: `Remora injects the Istio proxy sidecar and its traffic-capture init container
into pods, as a Kubernetes admission webhook (injector serve) or offline
(injector inject), with Istio's annotations, values and templates.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(
		newInjectCmd(),   // inject.go
		newUninjectCmd(), // inject.go
		newServeCmd(),    // serve.go
		newStatusCmd(),   // status.go
		newExplainCmd(),  // explain.go, explain_decide.go
		newCleanupCmd(),  // cleanup.go
		newIptablesCmd(), // iptables.go
		newVersionCmd(),  // below
	)
	return root
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the injector's version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprintf(cmd.OutOrStdout(), "remora injector %s (revision %s)\n", version.Version, version.Revision)
			return err
		},
	}
}
