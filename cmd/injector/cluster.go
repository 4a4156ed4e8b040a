package main

import (
	"fmt"

	"github.com/go-logr/logr"
	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	crconfig "sigs.k8s.io/controller-runtime/pkg/client/config"

	"github.com/remora-mesh/remora/pkg/config"
)

// clusterOptions are the flags serve and status share: the cluster to talk
// to, and the flags that override the injector's configuration. status takes
// serve's flags so that it computes the configuration, and so the hash, that
// serve computes.
type clusterOptions struct {
	kubeconfig     string
	kubeContext    string
	revision       string
	nativeSidecars string
}

func (c *clusterOptions) addFlags(f *pflag.FlagSet) {
	f.StringVar(&c.kubeconfig, "kubeconfig", "", "kubeconfig file; empty: $KUBECONFIG, the in-cluster config, then ~/.kube/config")
	f.StringVar(&c.kubeContext, "context", "", "kubeconfig context to use")
	f.StringVar(&c.revision, "revision", "", "Istio revision (istio.io/rev) this injector serves; overrides the values' revision when set")
	f.StringVar(&c.nativeSidecars, "native-sidecars", "auto", "inject the proxy as a native sidecar (an init container with restartPolicy Always): auto (from the API server's version, >= 1.29), true or false; true and false override the values' global.nativeSidecars")
}

func (c *clusterOptions) validate(root *field.Path) field.ErrorList {
	switch c.nativeSidecars {
	case "auto", "true", "false":
		return nil
	}
	return field.ErrorList{field.NotSupported(root.Child("native-sidecars"), c.nativeSidecars, []string{"auto", "true", "false"})}
}

// restConfig loads --kubeconfig and --context, or controller-runtime's
// defaults ($KUBECONFIG, in-cluster, ~/.kube/config) with --context. It is
// the one kubeconfig loader of the injector's commands.
func (c *clusterOptions) restConfig() (*rest.Config, error) {
	var (
		cfg *rest.Config
		err error
	)
	if c.kubeconfig == "" {
		cfg, err = crconfig.GetConfigWithContext(c.kubeContext)
	} else {
		cfg, err = clientcmd.NewNonInteractiveDeferredLoadingClientConfig(
			&clientcmd.ClientConfigLoadingRules{ExplicitPath: c.kubeconfig},
			&clientcmd.ConfigOverrides{CurrentContext: c.kubeContext},
		).ClientConfig()
	}
	if err != nil {
		return nil, fmt.Errorf("loading the kubeconfig: %w", err)
	}
	return cfg, nil
}

// overrides returns what the flags override in the configuration. With
// --native-sidecars auto it asks the API server for its version, by which
// config.Load resolves auto.
func (c *clusterOptions) overrides(restCfg *rest.Config, log logr.Logger) (config.Overrides, error) {
	o := config.Overrides{Revision: c.revision, NativeSidecars: c.nativeSidecars}
	if c.nativeSidecars != "auto" {
		return o, nil
	}
	dc, err := discovery.NewDiscoveryClientForConfig(restCfg)
	if err != nil {
		return o, fmt.Errorf("creating a discovery client: %w", err)
	}
	info, err := dc.ServerVersion()
	if err != nil {
		return o, fmt.Errorf("reading the API server's version for --native-sidecars=auto: %w", err)
	}
	native, err := config.NativeSidecarsSupported(info.GitVersion)
	if err != nil {
		return o, err
	}
	log.Info("Detected native sidecar support", "serverVersion", info.GitVersion, "nativeSidecars", native)
	o.ServerVersion = info.GitVersion
	return o, nil
}
