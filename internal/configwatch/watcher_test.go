package configwatch

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/remora-mesh/remora/pkg/config"
)

const (
	proxyV2 = "global:\n  proxy:\n    image: example.com/proxy:v2\n"
	proxyV3 = "global:\n  proxy:\n    image: example.com/proxy:v3\n"
	// brokenYAML does not parse.
	brokenYAML = "global: [\n"
	// badValue parses but fails validation.
	badValue = "global:\n  proxy:\n    statusPort: lots\n"
)

// fastOptions make the watcher react within the test's patience.
func fastOptions(dir string) Options {
	return Options{Dir: dir, Debounce: 20 * time.Millisecond, ResyncInterval: time.Hour}
}

// startWatcher runs w until the test ends.
func startWatcher(t *testing.T, w *Watcher) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- w.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Start returned %v", err)
		}
	})
	// Files changed before the fsnotify watch is added would be seen only
	// at the hourly re-check.
	if w.opts.Dir != "" {
		waitFor(t, "the watcher to watch the directory", w.Watching)
	}
}

// waitFor polls cond for up to five seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// writeAtomic replaces path by a rename, as editors and the e2e tests do.
func writeAtomic(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	writeFile(t, tmp, content)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// configMapDir lays dir out as the kubelet mounts a ConfigMap: the files
// live in a timestamped directory that ..data points to, and each key is a
// symlink through ..data.
type configMapDir struct {
	t       *testing.T
	dir     string
	version int
}

func newConfigMapDir(t *testing.T, files map[string]string) *configMapDir {
	c := &configMapDir{t: t, dir: t.TempDir()}
	c.update(files)
	for name := range files {
		if err := os.Symlink(filepath.Join("..data", name), filepath.Join(c.dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// update swaps in a new version of the files the way the kubelet does:
// write a new timestamped directory, point ..data_tmp at it, rename
// ..data_tmp over ..data, remove the old directory.
func (c *configMapDir) update(files map[string]string) {
	t := c.t
	old := fmt.Sprintf("..v%d", c.version)
	c.version++
	ts := fmt.Sprintf("..v%d", c.version)
	if err := os.Mkdir(filepath.Join(c.dir, ts), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, content := range files {
		writeFile(t, filepath.Join(c.dir, ts, name), content)
	}
	tmpLink := filepath.Join(c.dir, "..data_tmp")
	if err := os.Symlink(ts, tmpLink); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmpLink, filepath.Join(c.dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if c.version > 1 {
		if err := os.RemoveAll(filepath.Join(c.dir, old)); err != nil {
			t.Fatal(err)
		}
	}
}

func TestNewWithoutDirServesTheEmbeddedDefault(t *testing.T) {
	w, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	def := config.MustDefault()
	if got := w.Current().Hash; got != def.Hash {
		t.Fatalf("hash %s, want the embedded default's %s", got, def.Hash)
	}
	if err := w.Checker(nil); err != nil {
		t.Fatalf("Checker: %v", err)
	}
}

func TestNewRejectsAnInvalidDirectory(t *testing.T) {
	for name, files := range map[string]map[string]string{
		"broken YAML":   {config.ValuesFile: brokenYAML},
		"invalid value": {config.ValuesFile: badValue},
		"bad template":  {"sidecar.tmpl": "{{ .Nope"},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			for f, content := range files {
				writeFile(t, filepath.Join(dir, f), content)
			}
			before := value(t, reloadTotal.WithLabelValues(resultFailure))
			if _, err := New(Options{Dir: dir}); err == nil {
				t.Fatal("New accepted an invalid configuration")
			}
			if got := value(t, reloadTotal.WithLabelValues(resultFailure)); got != before+1 {
				t.Fatalf("failure count %v, want %v", got, before+1)
			}
		})
	}
	if _, err := New(Options{Dir: filepath.Join(t.TempDir(), "missing")}); err == nil {
		t.Fatal("New accepted a missing directory")
	}
}

func TestReloadOnFileChange(t *testing.T) {
	tests := []struct {
		name  string
		write func(t *testing.T, path, content string)
	}{
		{"in place", writeFile},
		{"atomic rename", writeAtomic},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			values := filepath.Join(dir, config.ValuesFile)
			tt.write(t, values, proxyV2)
			w, err := New(fastOptions(dir))
			if err != nil {
				t.Fatal(err)
			}
			if got := w.Current().Settings.ProxyImage; got != "example.com/proxy:v2" {
				t.Fatalf("initial proxy image %q", got)
			}
			startWatcher(t, w)
			tt.write(t, values, proxyV3)
			waitFor(t, "the v3 image", func() bool { return w.Current().Settings.ProxyImage == "example.com/proxy:v3" })
		})
	}
}

func TestReloadOnConfigMapSwap(t *testing.T) {
	cm := newConfigMapDir(t, map[string]string{config.ValuesFile: proxyV2})
	w, err := New(fastOptions(cm.dir))
	if err != nil {
		t.Fatal(err)
	}
	if got := w.Current().Settings.ProxyImage; got != "example.com/proxy:v2" {
		t.Fatalf("initial proxy image %q", got)
	}
	startWatcher(t, w)
	successes := value(t, reloadTotal.WithLabelValues(resultSuccess))
	cm.update(map[string]string{config.ValuesFile: proxyV3})
	waitFor(t, "the v3 image", func() bool { return w.Current().Settings.ProxyImage == "example.com/proxy:v3" })
	if got := value(t, reloadTotal.WithLabelValues(resultSuccess)); got != successes+1 {
		t.Fatalf("success count %v, want %v", got, successes+1)
	}
	if got := value(t, configInfo.WithLabelValues(w.Current().Hash)); got != 1 {
		t.Fatalf("remora_config_info for the current hash is %v, want 1", got)
	}
}

func TestInvalidReloadKeepsTheLastGood(t *testing.T) {
	for name, broken := range map[string]string{"broken YAML": brokenYAML, "invalid value": badValue} {
		t.Run(name, func(t *testing.T) {
			cm := newConfigMapDir(t, map[string]string{config.ValuesFile: proxyV2})
			w, err := New(fastOptions(cm.dir))
			if err != nil {
				t.Fatal(err)
			}
			good := w.Current()
			startWatcher(t, w)
			failures := value(t, reloadTotal.WithLabelValues(resultFailure))
			cm.update(map[string]string{config.ValuesFile: broken})
			waitFor(t, "the failure to be counted", func() bool {
				return value(t, reloadTotal.WithLabelValues(resultFailure)) > failures
			})
			if w.Current() != good {
				t.Fatal("an invalid configuration replaced the last good one")
			}
			// Fixing the directory is picked up again.
			cm.update(map[string]string{config.ValuesFile: proxyV3})
			waitFor(t, "the fixed configuration", func() bool { return w.Current().Settings.ProxyImage == "example.com/proxy:v3" })
		})
	}
}

func TestReloadReportsErrorsAndSkipsUnchanged(t *testing.T) {
	dir := t.TempDir()
	values := filepath.Join(dir, config.ValuesFile)
	writeFile(t, values, proxyV2)
	w, err := New(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	first := w.Current()
	successes := value(t, reloadTotal.WithLabelValues(resultSuccess))
	if err := w.Reload(t.Context()); err != nil {
		t.Fatalf("Reload of an unchanged directory: %v", err)
	}
	if w.Current() != first {
		t.Fatal("an unchanged directory replaced the configuration")
	}
	if got := value(t, reloadTotal.WithLabelValues(resultSuccess)); got != successes {
		t.Fatalf("an unchanged reload was counted as a success (%v, want %v)", got, successes)
	}
	writeFile(t, values, badValue)
	if err := w.Reload(t.Context()); err == nil {
		t.Fatal("Reload accepted an invalid value")
	}
	if w.Current() != first {
		t.Fatal("an invalid configuration replaced the last good one")
	}
}

func TestPeriodicResyncCatchesMissedChanges(t *testing.T) {
	dir := t.TempDir()
	values := filepath.Join(dir, config.ValuesFile)
	writeFile(t, values, proxyV2)
	w, err := New(Options{Dir: dir, ResyncInterval: 50 * time.Millisecond, Debounce: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	startWatcher(t, w)
	// With an hour of debounce, only the periodic re-check can see this.
	writeFile(t, values, proxyV3)
	waitFor(t, "the periodic re-check", func() bool { return w.Current().Settings.ProxyImage == "example.com/proxy:v3" })
}

func TestOverridesApplyToEveryLoad(t *testing.T) {
	dir := t.TempDir()
	values := filepath.Join(dir, config.ValuesFile)
	writeFile(t, values, "revision: canary\n")
	o := config.Overrides{Revision: "stable", NativeSidecars: "false"}
	w, err := New(Options{Dir: dir, Overrides: o, Debounce: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	for _, content := range []string{"revision: canary\n", proxyV2} {
		writeFile(t, values, content)
		if err := w.Reload(t.Context()); err != nil {
			t.Fatal(err)
		}
		want, err := config.Load(config.FromData(map[string]string{config.ValuesFile: content}), o)
		if err != nil {
			t.Fatal(err)
		}
		got := w.Current()
		if got.Revision() != "stable" || got.Settings.NativeSidecars || got.Hash != want.Hash {
			t.Fatalf("revision %q, native sidecars %v, hash %s; want stable, false, %s", got.Revision(), got.Settings.NativeSidecars, got.Hash, want.Hash)
		}
	}
}

// value reads a counter's or gauge's current value.
func value(t *testing.T, m prometheus.Metric) float64 {
	t.Helper()
	var out dto.Metric
	if err := m.Write(&out); err != nil {
		t.Fatal(err)
	}
	switch {
	case out.Counter != nil:
		return out.Counter.GetValue()
	case out.Gauge != nil:
		return out.Gauge.GetValue()
	}
	t.Fatalf("%s is neither a counter nor a gauge", m.Desc())
	return 0
}
