// Command localcluster runs Remora on a local control plane for trying it
// out: etcd, kube-apiserver and kube-controller-manager (the e2e harness),
// the injector built from this checkout and run with "injector serve", and
// the MutatingWebhookConfiguration the Helm chart installs. It applies the
// examples into a namespace labelled istio-injection=enabled, prints how to
// look at the injected pods, and runs until Ctrl-C.
//
// There is no scheduler or kubelet: pods are created (and injected) but never
// run. Use hack/local-cluster.sh or make local-cluster.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"syscall"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	"github.com/remora-mesh/remora/internal/testenv"
	"github.com/remora-mesh/remora/test/e2e/framework"
)

const ownNamespace = "remora-system"

func main() {
	dir := flag.String("dir", "bin/local", "directory for the kubeconfig, certificates, configuration and logs")
	examples := flag.String("examples", "examples", "directory of manifests to apply into -namespace")
	namespace := flag.String("namespace", "demo", "namespace, labelled istio-injection=enabled, the examples go to")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *dir, *examples, *namespace, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "localcluster:", err)
		stop()
		os.Exit(1)
	}
}

func run(ctx context.Context, dir, examples, namespace string, out io.Writer) (err error) {
	repo, err := testenv.RepoRoot()
	if err != nil {
		return err
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("creating %s: %w", dir, err)
	}
	// Start the logs afresh (the processes append to them).
	oldLogs, _ := filepath.Glob(filepath.Join(dir, "*.log"))
	for _, f := range oldLogs {
		_ = os.Remove(f)
	}

	say := func(format string, args ...any) { _, _ = fmt.Fprintf(out, format, args...) }
	say("Building the injector and starting etcd, kube-apiserver and kube-controller-manager...\n")
	binary, err := framework.BuildInjector(repo, dir)
	if err != nil {
		return err
	}
	assets := testenv.K8sBinDir(repo)
	cluster, err := framework.StartCluster(framework.ClusterOptions{
		Assets: assets, Dir: dir, ControllerManager: true,
		AdminKubeconfig: filepath.Join(dir, "kubeconfig"),
	})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, cluster.Stop()) }()

	ca, err := framework.NewCA()
	if err != nil {
		return err
	}
	cert, err := ca.Issue()
	if err != nil {
		return err
	}
	certDir, configDir := filepath.Join(dir, "certs"), filepath.Join(dir, "config")
	if err := framework.WriteAtomically(certDir, cert.ServingFiles()); err != nil {
		return err
	}
	if err := os.MkdirAll(configDir, 0o750); err != nil {
		return fmt.Errorf("creating %s: %w", configDir, err)
	}
	for ns, labels := range map[string]map[string]string{
		ownNamespace: nil,
		namespace:    {"istio-injection": "enabled"},
	} {
		if err := cluster.CreateNamespace(ctx, ns, labels); err != nil {
			return err
		}
	}
	injectorKubeconfig, err := cluster.WriteKubeconfig("remora-injector", filepath.Join(dir, "injector.kubeconfig"))
	if err != nil {
		return err
	}
	inj, err := framework.StartInjector(ctx, framework.InjectorOptions{
		Binary:     binary,
		Kubeconfig: injectorKubeconfig,
		CertDir:    certDir,
		ConfigDir:  configDir,
		Namespace:  ownNamespace,
		LogPath:    filepath.Join(dir, "injector.log"),
	})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, inj.Stop(10*time.Second)) }()
	if err := cluster.InstallWebhook(ctx, framework.WebhookConfiguration(framework.WebhookOptions{
		Name:         "remora-sidecar-injector",
		NamespaceURL: inj.WebhookURL("/inject"),
		RevisionURL:  inj.WebhookURL("/inject"),
		CABundle:     ca.PEM(),
		OwnNamespace: ownNamespace,
	}), namespace); err != nil {
		return err
	}
	applied, err := apply(ctx, cluster, examples, namespace)
	if err != nil {
		return err
	}

	kubectl := filepath.Join(assets, "kubectl")
	kubeconfig := cluster.AdminKubeconfig
	say(`
Remora is serving on a local control plane (pods are created and injected, never run: there is no kubelet).
Applied to namespace %[3]s: %[4]v

  export KUBECONFIG=%[2]s
  %[1]s get pods -n %[3]s -o custom-columns='NAME:.metadata.name,INIT:.spec.initContainers[*].name,CONTAINERS:.spec.containers[*].name'
  %[1]s run demo --image=example.com/demo:1 -n %[3]s -o yaml --dry-run=server | grep -A3 'name: istio-proxy'

Injector: log %[5]s, metrics %[6]s, readiness %[7]s
Configuration: write values.yaml, mesh.yaml or *.tmpl into %[8]s; the injector reloads it.
Press Ctrl-C to stop.
`, kubectl, kubeconfig, namespace, applied, inj.LogPath, inj.MetricsURL(), inj.ReadyzURL(), configDir)

	select {
	case <-ctx.Done():
		say("\nStopping...\n")
		return nil
	case <-inj.Done():
		_, exitErr := inj.Exited()
		return fmt.Errorf("the injector exited: %w\n%s", exitErr, inj.LogTail(30))
	}
}

// apply creates every object of the YAML files in dir in namespace, and
// returns their kinds and names.
func apply(ctx context.Context, cluster *framework.Cluster, dir, namespace string) ([]string, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		return nil, err
	}
	sort.Strings(files)
	var applied []string
	for _, file := range files {
		f, err := os.Open(filepath.Clean(file))
		if err != nil {
			return nil, err
		}
		dec := utilyaml.NewYAMLOrJSONDecoder(f, 4096)
		for {
			obj := &unstructured.Unstructured{}
			if err := dec.Decode(&obj.Object); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				_ = f.Close()
				return nil, fmt.Errorf("decoding %s: %w", file, err)
			}
			if len(obj.Object) == 0 {
				continue
			}
			obj.SetNamespace(namespace)
			if err := cluster.Client.Create(ctx, obj); err != nil && !apierrors.IsAlreadyExists(err) {
				_ = f.Close()
				return nil, fmt.Errorf("creating %s %s from %s: %w", obj.GetKind(), obj.GetName(), file, err)
			}
			applied = append(applied, obj.GetKind()+"/"+obj.GetName())
		}
		_ = f.Close()
	}
	return applied, nil
}
