package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"github.com/go-logr/logr"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/version"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
	"sigs.k8s.io/yaml"

	"github.com/remora-mesh/remora/internal/upgrade"
	"github.com/remora-mesh/remora/internal/webhook"
	"github.com/remora-mesh/remora/pkg/config"
	"github.com/remora-mesh/remora/pkg/inject"
)

// TestHashAgreement proves that serve, inject, status and the upgrade
// controller agree on the configuration hash for the same configuration
// and flags: a pod injected by serve (its configuration watcher and the
// webhook handler) and one injected by the offline inject command carry the
// hash that status (from the ConfigMap's data) and the controller (with
// serve's configuration, over the pods' metadata) compute, so both are up to
// date. Rows whose configurations inject alike (the same revision, native
// sidecars resolved the same) share a hash; the others do not.
func TestHashAgreement(t *testing.T) {
	tests := []struct {
		name     string
		values   string // the ConfigMap's values.yaml
		server   string // the API server's version
		revision string // --revision
		native   string // --native-sidecars
		// offlineNative is inject's --native-sidecars where the offline
		// default (auto: native) is not what auto means on server.
		offlineNative string
		// want is the effective revision and native sidecar layout.
		wantRevision string
		wantNative   bool
	}{
		{name: "defaults, auto", native: "auto", wantRevision: "default", wantNative: true},
		{name: "defaults, true", native: "true", wantRevision: "default", wantNative: true},
		{name: "defaults, false", native: "false", wantRevision: "default", wantNative: false},
		{name: "values false, auto", values: "global:\n  nativeSidecars: \"false\"\n", native: "auto", wantRevision: "default", wantNative: false},
		{name: "values false, true", values: "global:\n  nativeSidecars: \"false\"\n", native: "true", wantRevision: "default", wantNative: true},
		{name: "values true, false", values: "global:\n  nativeSidecars: true\n", native: "false", wantRevision: "default", wantNative: false},
		{name: "revision default, auto", revision: "default", native: "auto", wantRevision: "default", wantNative: true},
		{name: "revision canary, auto", revision: "canary", native: "auto", wantRevision: "canary", wantNative: true},
		{name: "values revision canary, true", values: "revision: canary\n", native: "true", wantRevision: "canary", wantNative: true},
		{name: "revision canary, false", revision: "canary", native: "false", wantRevision: "canary", wantNative: false},
		{name: "1.28 server, auto", server: "v1.28.15", native: "auto", offlineNative: "false", wantRevision: "default", wantNative: false},
		{name: "1.28 server, true", server: "v1.28.15", native: "true", wantRevision: "default", wantNative: true},
	}
	byConfig := map[string]string{} // effective configuration -> hash
	byHash := map[string]string{}   // hash -> effective configuration
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			server := tt.server
			if server == "" {
				server = "v1.37.2"
			}
			restCfg := versionServer(t, server)
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, config.ValuesFile), []byte(tt.values), 0o600); err != nil {
				t.Fatal(err)
			}
			flags := clusterOptions{revision: tt.revision, nativeSidecars: tt.native}
			nsLabels := map[string]string{inject.LabelNamespaceInject: "enabled"}
			if tt.wantRevision != config.DefaultRevision {
				nsLabels = map[string]string{inject.LabelRevision: tt.wantRevision}
			}
			ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: nsLabels}}
			cm := &corev1.ConfigMap{
				ObjectMeta: metav1.ObjectMeta{Namespace: "remora-system", Name: "remora"},
				Data:       map[string]string{config.ValuesFile: tt.values},
			}
			c := fake.NewClientBuilder().WithObjects(ns, cm).Build()

			// serve: the configuration watcher and the webhook handler.
			serve := &serveOptions{clusterOptions: flags, configDir: dir}
			watcher, err := serve.configWatcher(restCfg, logr.Discard())
			if err != nil {
				t.Fatal(err)
			}
			served := admit(t, watcher.Current, c, appPod("from-serve"))

			// inject, offline: the same values file and flags.
			args := []string{"inject", "-f", writePod(t, appPod("from-inject")), "--values", filepath.Join(dir, config.ValuesFile),
				"--native-sidecars", tt.native}
			if tt.offlineNative != "" {
				args[len(args)-1] = tt.offlineNative
			}
			if tt.revision != "" {
				args = append(args, "--set", "values.revision="+tt.revision)
			}
			out, stderr, err := runRoot(t, args...)
			if err != nil {
				t.Fatalf("inject: %v (%s)", err, stderr)
			}
			offline := &corev1.Pod{}
			if err := yaml.Unmarshal([]byte(out), offline); err != nil {
				t.Fatal(err)
			}

			for _, p := range []*corev1.Pod{served, offline} {
				if got := nativeLayout(p); got != tt.wantNative {
					t.Errorf("%s: native sidecar %v, want %v", p.Name, got, tt.wantNative)
				}
				if err := c.Create(t.Context(), p); err != nil {
					t.Fatal(err)
				}
			}

			// status: the configuration from the ConfigMap's data, the
			// snapshot from the API server (whole pods).
			status := &statusOptions{injectorConfigOptions: injectorConfigOptions{clusterOptions: flags, configNamespace: "remora-system", configMap: "remora"}}
			statusCfg, _, err := status.loadConfig(t.Context(), c, restCfg)
			if err != nil {
				t.Fatal(err)
			}
			statusSnap, err := upgrade.ListSnapshot(t.Context(), c, statusCfg, "", upgrade.ListPods(c, ""), nil)
			if err != nil {
				t.Fatal(err)
			}
			// The controller: serve's configuration, the pods as it
			// watches them (metadata).
			metaPods := func(context.Context) ([]*upgrade.PodInfo, error) {
				return []*upgrade.PodInfo{upgrade.PodInfoFromMeta(&served.ObjectMeta), upgrade.PodInfoFromMeta(&offline.ObjectMeta)}, nil
			}
			controllerSnap, err := upgrade.ListSnapshot(t.Context(), c, watcher.Current(), "", metaPods, nil)
			if err != nil {
				t.Fatal(err)
			}

			hash := served.Annotations[inject.AnnotationConfigHash]
			for who, h := range map[string]string{
				"inject":     offline.Annotations[inject.AnnotationConfigHash],
				"status":     statusCfg.Hash,
				"controller": watcher.Current().Hash,
			} {
				if h != hash {
					t.Errorf("%s computes hash %q, serve injected %q", who, h, hash)
				}
			}
			for who, snap := range map[string]*upgrade.Snapshot{"status": statusSnap, "controller": controllerSnap} {
				rep := upgrade.Evaluate(snap)
				if rep.Revision != tt.wantRevision || rep.Pods.Total != 2 || rep.Pods.Outdated != 0 || rep.Pods.Unselected != 0 {
					t.Errorf("%s: revision %q, %d pods, %d outdated, %d unselected; want %q, 2 up to date",
						who, rep.Revision, rep.Pods.Total, rep.Pods.Outdated, rep.Pods.Unselected, tt.wantRevision)
				}
			}
			effective := fmt.Sprintf("revision %s, native sidecars %v", tt.wantRevision, tt.wantNative)
			t.Logf("hash %s: %s", hash, effective)
			if h, ok := byConfig[effective]; ok && h != hash {
				t.Errorf("hash %s, another row with %s has %s", hash, effective, h)
			}
			if other, ok := byHash[hash]; ok && other != effective {
				t.Errorf("hash %s is also the hash of %s", hash, other)
			}
			byConfig[effective], byHash[hash] = hash, effective
		})
	}
}

// versionServer serves an API server's /version, which is all that
// --native-sidecars auto asks, and returns a client configuration for it.
func versionServer(t *testing.T, gitVersion string) *rest.Config {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/version" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(version.Info{GitVersion: gitVersion})
	}))
	t.Cleanup(srv.Close)
	return &rest.Config{Host: srv.URL}
}

// appPod is a pod to inject.
func appPod(name string) *corev1.Pod {
	return &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "example.com/app:1"}}},
	}
}

// writePod writes a pod's manifest for inject -f.
func writePod(t *testing.T, pod *corev1.Pod) string {
	t.Helper()
	b, err := yaml.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "pod.yaml")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// admit sends the pod's creation through the webhook handler, as the API
// server does, and returns the pod with the response's patch applied.
func admit(t *testing.T, cfg func() *config.Config, namespaces client.Reader, pod *corev1.Pod) *corev1.Pod {
	t.Helper()
	h, err := webhook.NewHandler(webhook.Options{Config: cfg, Namespaces: namespaces, OwnNamespace: "remora-system"})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := json.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	resp := h.Handle(t.Context(), admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
		UID:       "1",
		Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
		Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
		Namespace: pod.Namespace,
		Operation: admissionv1.Create,
		Object:    runtime.RawExtension{Raw: raw},
	}})
	if !resp.Allowed || len(resp.Patch) == 0 {
		t.Fatalf("not injected: %+v", resp.Result)
	}
	patch, err := jsonpatch.DecodePatch(resp.Patch)
	if err != nil {
		t.Fatal(err)
	}
	patched, err := patch.Apply(raw)
	if err != nil {
		t.Fatal(err)
	}
	out := &corev1.Pod{}
	if err := json.Unmarshal(patched, out); err != nil {
		t.Fatal(err)
	}
	return out
}

// nativeLayout reports whether the pod's proxy is a native sidecar.
func nativeLayout(pod *corev1.Pod) bool {
	for _, c := range pod.Spec.InitContainers {
		if c.Name == inject.ProxyContainerName {
			return true
		}
	}
	return false
}
