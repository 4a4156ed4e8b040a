package main

import (
	"context"
	"fmt"

	"github.com/go-logr/logr"
	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/client-go/discovery"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
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
		cfg, err = c.explicitKubeconfig().ClientConfig()
	}
	if err != nil {
		return nil, fmt.Errorf("loading the kubeconfig: %w", err)
	}
	return cfg, nil
}

// explicitKubeconfig is the kubeconfig file --kubeconfig names, with
// --context.
func (c *clusterOptions) explicitKubeconfig() clientcmd.ClientConfig {
	return clientcmd.NewNonInteractiveDeferredLoadingClientConfig(
		&clientcmd.ClientConfigLoadingRules{ExplicitPath: c.kubeconfig},
		&clientcmd.ConfigOverrides{CurrentContext: c.kubeContext},
	)
}

// contextNamespace is the namespace of --kubeconfig's context ("default"
// when it names none): where kubectl puts an object without one.
func (c *clusterOptions) contextNamespace() (string, error) {
	ns, _, err := c.explicitKubeconfig().Namespace()
	if err != nil {
		return "", fmt.Errorf("loading the kubeconfig: %w", err)
	}
	return ns, nil
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

// client returns a client of the cluster (client-go's scheme) and its
// configuration.
func (c *clusterOptions) client() (client.Client, *rest.Config, error) {
	restCfg, err := c.restConfig()
	if err != nil {
		return nil, nil, err
	}
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, nil, fmt.Errorf("building the scheme: %w", err)
	}
	cl, err := client.New(restCfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, nil, fmt.Errorf("creating the client: %w", err)
	}
	return cl, restCfg, nil
}

// injectorConfigOptions are clusterOptions and where the injector's
// configuration lives: the flags of the commands (status, explain) that
// compute, from the cluster, the configuration serve serves.
type injectorConfigOptions struct {
	clusterOptions
	configNamespace string
	configMap       string
	configDir       string
}

func (o *injectorConfigOptions) addFlags(f *pflag.FlagSet) {
	o.clusterOptions.addFlags(f)
	f.StringVar(&o.configNamespace, "config-namespace", "remora-system", "namespace of the injector's configuration ConfigMap")
	f.StringVar(&o.configMap, "configmap", "remora", "the injector's configuration ConfigMap (values.yaml, mesh.yaml, *.tmpl)")
	f.StringVar(&o.configDir, "config-dir", "", "read the configuration from this directory instead of the ConfigMap")
}

// loadConfig computes the configuration the injector serves: from its
// ConfigMap's data (or --config-dir), with the overrides serve applies (auto
// resolved by the API server's version), so that the hash matches the one
// injected pods carry. It returns the configuration and where it came from.
func (o *injectorConfigOptions) loadConfig(ctx context.Context, c client.Reader, restCfg *rest.Config) (*config.Config, string, error) {
	overrides, err := o.overrides(restCfg, logr.Discard())
	if err != nil {
		return nil, "", err
	}
	var (
		src  config.Sources
		from string
	)
	if o.configDir != "" {
		if src, err = config.FromDir(o.configDir); err != nil {
			return nil, "", fmt.Errorf("loading the injection configuration: %w", err)
		}
		from = "directory " + o.configDir
	} else {
		cm := &corev1.ConfigMap{}
		if err := c.Get(ctx, client.ObjectKey{Namespace: o.configNamespace, Name: o.configMap}, cm); err != nil {
			return nil, "", fmt.Errorf("reading the injector's ConfigMap %s/%s (see --config-namespace, --configmap, --config-dir): %w",
				o.configNamespace, o.configMap, err)
		}
		src = config.FromData(cm.Data)
		from = "ConfigMap " + o.configNamespace + "/" + o.configMap
	}
	cfg, err := config.Load(src, overrides)
	if err != nil {
		return nil, "", fmt.Errorf("loading the injection configuration from %s: %w", from, err)
	}
	return cfg, from, nil
}
