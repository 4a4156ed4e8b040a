// Package configwatch keeps the injector's configuration current while it
// serves. It loads a configuration directory (a mounted ConfigMap: values.yaml,
// mesh.yaml, *.tmpl) with config.FromDir and config.Load, watches the directory with
// fsnotify (which sees the kubelet's atomic "..data" symlink swap as well as
// plain writes and renames), re-checks it periodically as a safety net, and
// publishes each new configuration through an atomic pointer only once it has
// been fully parsed and validated. An invalid configuration is rejected and
// logged; the last good one keeps serving.
package configwatch

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/go-logr/logr"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"github.com/remora-mesh/remora/pkg/config"
)

// Defaults applied to zero Options fields.
const (
	// DefaultResyncInterval is the period of the safety-net re-check.
	DefaultResyncInterval = time.Minute
	// DefaultDebounce is how long the watcher waits after the last file
	// event before reloading, so that one ConfigMap update (several events)
	// causes one reload.
	DefaultDebounce = 250 * time.Millisecond
)

// Options configure a Watcher.
type Options struct {
	// Dir is the configuration directory. Empty means the embedded default
	// configuration, which never changes.
	Dir string
	// Overrides are applied to every configuration loaded: flags win over
	// the files, and auto is resolved by their ServerVersion.
	Overrides config.Overrides
	// ResyncInterval is the period of the safety-net re-check
	// (default DefaultResyncInterval).
	ResyncInterval time.Duration
	// Debounce is the quiet time after a file event before a reload
	// (default DefaultDebounce).
	Debounce time.Duration
}

// Watcher holds the current configuration and reloads it when the
// configuration directory changes. It implements manager.Runnable; Current is
// safe for concurrent use.
type Watcher struct {
	opts    Options
	current atomic.Pointer[config.Config]
	// watching is set while the fsnotify watch on the directory is in place.
	watching atomic.Bool

	// mu serialises reloads and guards lastErr.
	mu      sync.Mutex
	lastErr string
	// changed receives a value (without blocking) each time a new
	// configuration is published.
	changed chan struct{}
}

var (
	_ manager.Runnable               = (*Watcher)(nil)
	_ manager.LeaderElectionRunnable = (*Watcher)(nil)
)

// New loads the configuration once and returns a Watcher serving it. An
// invalid or unreadable configuration at start-up is an error: the injector
// refuses to start rather than serve something it was not given.
func New(opts Options) (*Watcher, error) {
	if opts.ResyncInterval <= 0 {
		opts.ResyncInterval = DefaultResyncInterval
	}
	if opts.Debounce <= 0 {
		opts.Debounce = DefaultDebounce
	}
	w := &Watcher{opts: opts, changed: make(chan struct{}, 1)}
	cfg, err := w.load()
	if err != nil {
		reloadTotal.WithLabelValues(resultFailure).Inc()
		return nil, err
	}
	w.publish(cfg)
	return w, nil
}

// Current returns the configuration in effect. It never returns nil for a
// Watcher built by New.
func (w *Watcher) Current() *config.Config { return w.current.Load() }

// Changes returns a channel that receives a value when a new configuration
// was published (several changes in a row may arrive as one). There is one
// such channel per Watcher: it is meant for one consumer, the upgrade
// controller, which evaluates the cluster at once instead of at its next
// poll.
func (w *Watcher) Changes() <-chan struct{} { return w.changed }

// Checker is a healthz checker (for /readyz) that fails until a
// configuration is loaded.
func (w *Watcher) Checker(_ *http.Request) error {
	if w.current.Load() == nil {
		return errors.New("no injection configuration loaded")
	}
	return nil
}

// Watching reports whether the configuration directory is watched, so that a
// change is seen at once; otherwise only the periodic re-check sees it.
func (w *Watcher) Watching() bool { return w.watching.Load() }

// NeedLeaderElection returns false: every replica serves admissions and so
// needs its own current configuration.
func (w *Watcher) NeedLeaderElection() bool { return false }

// Start watches the configuration directory until ctx ends. Without a
// directory it only waits for ctx. Reload failures are logged and counted,
// never returned: the last good configuration keeps serving.
func (w *Watcher) Start(ctx context.Context) error {
	logger := log.FromContext(ctx).WithName("configwatch")
	if w.opts.Dir == "" {
		logger.Info("Serving the embedded default configuration", "hash", w.Current().Hash)
		<-ctx.Done()
		return nil
	}
	logger = logger.WithValues("dir", w.opts.Dir)

	fsw, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("creating the config directory watcher: %w", err)
	}
	defer func() { _ = fsw.Close() }()
	watching := false
	watch := func() {
		if watching {
			return
		}
		// Watch the directory, not the files: the kubelet replaces a
		// ConfigMap's files by swapping the ..data symlink, and editors and
		// atomic writers rename over the file, neither of which a watch on
		// the old file would see.
		if err := fsw.Add(w.opts.Dir); err != nil {
			logger.Error(err, "Cannot watch the config directory; relying on the periodic re-check")
			return
		}
		watching = true
		w.watching.Store(true)
	}
	watch()
	logger.Info("Watching the configuration", "hash", w.Current().Hash, "resyncInterval", w.opts.ResyncInterval)

	resync := time.NewTicker(w.opts.ResyncInterval)
	defer resync.Stop()
	debounce := time.NewTimer(0)
	if !debounce.Stop() {
		<-debounce.C
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-fsw.Events:
			if !ok {
				return errors.New("config directory watcher closed")
			}
			logger.V(2).Info("Config directory event", "event", ev.String())
			if ev.Name == w.opts.Dir && ev.Has(fsnotify.Remove|fsnotify.Rename) {
				// The directory itself went away: the watch is gone.
				watching = false
				w.watching.Store(false)
			}
			debounce.Reset(w.opts.Debounce)
		case err, ok := <-fsw.Errors:
			if !ok {
				return errors.New("config directory watcher closed")
			}
			logger.Error(err, "Config directory watcher error")
		case <-debounce.C:
			_ = w.reload(logger) // logged and counted
		case <-resync.C:
			watch()
			_ = w.reload(logger) // logged and counted
		}
	}
}

// Reload loads the configuration directory now and publishes it if it is
// valid and differs from the current one. The error says why a configuration
// was rejected; the current one is then unchanged.
func (w *Watcher) Reload(ctx context.Context) error {
	return w.reload(log.FromContext(ctx).WithName("configwatch"))
}

func (w *Watcher) reload(logger logr.Logger) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	cfg, err := w.load()
	if err != nil {
		reloadTotal.WithLabelValues(resultFailure).Inc()
		// Log each distinct failure once at error level, so that the
		// periodic re-check of a broken directory does not flood the log.
		if msg := err.Error(); msg != w.lastErr {
			w.lastErr = msg
			logger.Error(err, "Rejected the new configuration; the last good one keeps serving",
				"servingHash", w.Current().Hash)
		} else {
			logger.V(1).Info("The configuration is still invalid", "error", msg)
		}
		return err
	}
	w.lastErr = ""
	old := w.Current()
	if old != nil && old.Hash == cfg.Hash {
		return nil
	}
	w.publish(cfg)
	reloadTotal.WithLabelValues(resultSuccess).Inc()
	logger.Info("Loaded a new configuration", "hash", cfg.Hash, "previousHash", old.Hash)
	return nil
}

// load reads and validates the configuration without publishing it.
func (w *Watcher) load() (*config.Config, error) {
	if w.opts.Dir == "" {
		cfg, err := config.Load(config.Sources{}, w.opts.Overrides)
		if err != nil {
			return nil, fmt.Errorf("loading the embedded configuration: %w", err)
		}
		return cfg, nil
	}
	src, err := config.FromDir(w.opts.Dir)
	if err == nil {
		var cfg *config.Config
		if cfg, err = config.Load(src, w.opts.Overrides); err == nil {
			return cfg, nil
		}
	}
	return nil, fmt.Errorf("loading configuration directory %s: %w", w.opts.Dir, err)
}

// publish makes cfg current and updates the gauges.
func (w *Watcher) publish(cfg *config.Config) {
	w.current.Store(cfg)
	select {
	case w.changed <- struct{}{}:
	default:
	}
	lastSuccess.SetToCurrentTime()
	configInfo.Reset()
	configInfo.WithLabelValues(cfg.Hash).Set(1)
}
