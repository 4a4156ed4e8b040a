package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"

	"github.com/remora-mesh/remora/internal/manifest"
	"github.com/remora-mesh/remora/internal/services"
	"github.com/remora-mesh/remora/pkg/config"
	"github.com/remora-mesh/remora/pkg/inject"
)

// configFlags are the flags that select an injection configuration.
type configFlags struct {
	valuesFile     string
	meshFile       string
	templatesDir   string
	sets           []string
	nativeSidecars string
}

func (f *configFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.valuesFile, "values", "", "Istio-style injector values YAML (global.*, sidecarInjectorWebhook.*), over the embedded defaults")
	cmd.Flags().StringVar(&f.meshFile, "mesh-config", "", "mesh config YAML (defaultConfig, trustDomain, ...), over the embedded defaults")
	cmd.Flags().StringVar(&f.templatesDir, "templates", "", "directory of *.tmpl injection templates that add to or replace the embedded ones")
	cmd.Flags().StringArrayVar(&f.sets, "set", nil, "override one setting: values.PATH=VALUE or meshConfig.PATH=VALUE (repeatable)")
	cmd.Flags().StringVar(&f.nativeSidecars, "native-sidecars", "auto", "proxy as a native sidecar (init container with restartPolicy Always): auto|true|false, over the values' global.nativeSidecars; offline, auto means true")
}

// load builds the configuration: embedded defaults, then the files, then
// the flags (offline: --native-sidecars auto means native sidecars).
func (f *configFlags) load() (*config.Config, error) {
	src, err := config.FromFiles(f.valuesFile, f.meshFile, f.templatesDir)
	if err != nil {
		return nil, err
	}
	o := config.Overrides{NativeSidecars: f.nativeSidecars}
	for _, s := range f.sets {
		if err := o.Set(s); err != nil {
			return nil, err
		}
	}
	cfg, err := config.Load(src, o)
	if err != nil {
		return nil, fmt.Errorf("invalid configuration: %w", err)
	}
	return cfg, nil
}

// readInputs reads FILE, every *.yaml/*.yml/*.json of DIR, or "-" (stdin).
func readInputs(path string, stdin io.Reader) ([]byte, error) {
	if path == "-" {
		return io.ReadAll(stdin)
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !st.IsDir() {
		return os.ReadFile(path)
	}
	var files []string
	err = filepath.WalkDir(path, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		switch strings.ToLower(filepath.Ext(p)) {
		case ".yaml", ".yml", ".json":
			if !d.IsDir() {
				files = append(files, p)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.Strings(files)
	var buf bytes.Buffer
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		buf.WriteString("\n---\n")
		buf.Write(b)
	}
	return buf.Bytes(), nil
}

// serviceLookup resolves the Services pods exclude by name
// (traffic.remora.io/excludeOutboundServices) against the cluster of
// --kubeconfig; without it, injection is offline and such a pod is refused.
type serviceLookup struct {
	cluster clusterOptions
	// resolver is nil offline.
	resolver *services.Resolver
	// namespace is the kubeconfig context's, for objects without one.
	namespace string
}

func (l *serviceLookup) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&l.cluster.kubeconfig, "kubeconfig", "", "kubeconfig of the cluster to resolve the Services of traffic.remora.io/excludeOutboundServices in (read with GETs); empty: offline, and a pod naming Services is refused")
	cmd.Flags().StringVar(&l.cluster.kubeContext, "context", "", "kubeconfig context to use (with --kubeconfig)")
}

// connect creates the client of --kubeconfig, if given.
func (l *serviceLookup) connect() error {
	if l.cluster.kubeconfig == "" {
		if l.cluster.kubeContext != "" {
			return fmt.Errorf("--context needs --kubeconfig")
		}
		return nil
	}
	c, _, err := l.cluster.client()
	if err != nil {
		return err
	}
	if l.namespace, err = l.cluster.contextNamespace(); err != nil {
		return err
	}
	l.resolver = &services.Resolver{Reader: c}
	return nil
}

// request is the engine's request for pod: with a cluster, an object
// without a namespace is in the context's (as kubectl applies it), and the
// Services it names are resolved there.
func (l *serviceLookup) request(ctx context.Context, pod *corev1.Pod, wl inject.Workload, cfg *config.Config) inject.Request {
	req := inject.Request{Pod: pod, Namespace: pod.Namespace, Config: cfg, Workload: wl}
	if l.resolver != nil {
		if req.Namespace == "" {
			req.Namespace = l.namespace
		}
		req.Services = l.resolver.For(ctx)
	}
	return req
}

func newInjectCmd() *cobra.Command {
	var (
		file    string
		cfgFlag configFlags
		lookup  serviceLookup
	)
	cmd := &cobra.Command{
		Use:   "inject -f FILE|DIR|-",
		Short: "Inject the sidecar into Kubernetes manifests, offline",
		Long: `Inject reads Kubernetes manifests (multi-document YAML, kind: List) and writes
them with the Istio proxy sidecar and traffic-capture init container added to
every pod template (Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet,
ReplicationController, Job, CronJob). Other kinds pass through unchanged.
The manifests go to standard output; one line per object to standard error.
The embedded default configuration is used unless flags override it.
Injection is offline, except that the Services a pod excludes from the
capture by name (traffic.remora.io/excludeOutboundServices) are resolved to
their addresses in the cluster of --kubeconfig; without it such a pod is
refused.`,
		Example: `  injector inject -f examples/bookinfo-reviews.yaml
  injector inject -f app.yaml | kubectl apply -f -
  injector inject -f app.yaml --set values.global.proxy.statusPort=0 --native-sidecars=false
  injector inject -f app-with-excluded-services.yaml --kubeconfig ~/.kube/config --context prod`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return fmt.Errorf("-f FILE|DIR|- is required")
			}
			cfg, err := cfgFlag.load()
			if err != nil {
				return err
			}
			if err := lookup.connect(); err != nil {
				return err
			}
			in, err := readInputs(file, cmd.InOrStdin())
			if err != nil {
				return fmt.Errorf("-f %s: %w", file, err)
			}
			out, reports, err := manifest.Process(bytes.NewReader(in), func(pod *corev1.Pod, wl inject.Workload) (*corev1.Pod, bool, string, string, error) {
				res, err := inject.Inject(lookup.request(cmd.Context(), pod, wl, cfg))
				if err != nil {
					return nil, false, "", "", err
				}
				return res.Pod, res.Injected, string(res.Reason), res.Message, nil
			})
			if err != nil {
				return err
			}
			if _, err := cmd.OutOrStdout().Write(out); err != nil {
				return err
			}
			for _, r := range reports {
				if _, err := fmt.Fprintln(cmd.ErrOrStderr(), r.String()); err != nil {
					return err
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "filename", "f", "", "manifest file, directory, or - for standard input")
	cfgFlag.register(cmd)
	lookup.register(cmd)
	return cmd
}

func newUninjectCmd() *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "uninject -f FILE|DIR|-",
		Short: "Remove an injected sidecar from Kubernetes manifests",
		Long: `Uninject removes what injection added (containers, init containers, volumes,
image pull secrets, labels and annotations, rewritten probes), using the
sidecar.istio.io/status annotation that injection leaves on every pod.`,
		Example: `  injector inject -f app.yaml | injector uninject -f -`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return fmt.Errorf("-f FILE|DIR|- is required")
			}
			in, err := readInputs(file, cmd.InOrStdin())
			if err != nil {
				return fmt.Errorf("-f %s: %w", file, err)
			}
			out, reports, err := manifest.Process(bytes.NewReader(in), func(pod *corev1.Pod, _ inject.Workload) (*corev1.Pod, bool, string, string, error) {
				res, changed, err := inject.Uninject(pod)
				if err != nil {
					return nil, false, "", "", err
				}
				if !changed {
					return pod, false, "not-injected", "not injected", nil
				}
				return res, true, "uninjected", "uninjected", nil
			})
			if err != nil {
				return err
			}
			if _, err := cmd.OutOrStdout().Write(out); err != nil {
				return err
			}
			for _, r := range reports {
				line := r.String()
				if r.Injected {
					line = fmt.Sprintf("%s/%s: uninjected", r.Kind, r.Name)
				}
				if _, err := fmt.Fprintln(cmd.ErrOrStderr(), line); err != nil {
					return err
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "filename", "f", "", "manifest file, directory, or - for standard input")
	return cmd
}
