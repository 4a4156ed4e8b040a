package node

import (
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/remora-mesh/remora/internal/testenv"
)

// startProc starts a long-running node process with testenv's process
// runner, logging to Dir/logs/NAME.log. It gets its own process group (a
// Ctrl-C in the terminal reaches the test, which stops it in order) and
// SIGKILL if the test process dies without stopping it; the next Start
// cleans up what it leaves.
func (c *Cluster) startProc(name, path string, args ...string) (*testenv.Process, error) {
	p, err := testenv.Command{
		Name: name, LogPath: filepath.Join(c.Dir, "logs", name+".log"), Path: path, Args: args,
		Dir: c.Dir, Env: []string{"KUBECACHEDIR=" + filepath.Join(c.Dir, "kubecache")},
	}.Start()
	if err != nil {
		return nil, err
	}
	c.procsMu.Lock()
	c.procs[name] = p
	c.procsMu.Unlock()
	c.opts.Logf("node: started %s (pid %d), log %s", name, p.Pid(), p.LogPath)
	return p, nil
}

func (c *Cluster) getProc(name string) *testenv.Process {
	c.procsMu.Lock()
	defer c.procsMu.Unlock()
	return c.procs[name]
}

// procRunning reports whether the named process was started and still runs.
func (c *Cluster) procRunning(name string) bool {
	p := c.getProc(name)
	return p != nil && p.Running()
}

// stopProc sends SIGTERM to the process's group and, after grace, SIGKILL.
func (c *Cluster) stopProc(name string, grace time.Duration) {
	p := c.getProc(name)
	if p == nil || !p.Running() {
		return
	}
	_ = p.Signal(syscall.SIGTERM)
	select {
	case <-p.Done():
	case <-time.After(grace):
		c.opts.Logf("node: %s did not exit %s after SIGTERM; killing it", name, grace)
		_ = p.Signal(syscall.SIGKILL)
		<-p.Done()
	}
}

// logTail returns the last n lines of a process's log, indented.
func (c *Cluster) logTail(name string, n int) string {
	p := c.getProc(name)
	if p == nil {
		return ""
	}
	return "\n\t" + strings.ReplaceAll(p.LogTail(n), "\n", "\n\t")
}
