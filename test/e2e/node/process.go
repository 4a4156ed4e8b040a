package node

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// proc is a process the node started, logging to Dir/logs/NAME.log.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

// startProc starts a long-running node process. It gets its own process
// group (a Ctrl-C in the terminal reaches the test, which stops it in order)
// and SIGKILL if the test process dies without stopping it; the next Start
// cleans up what it leaves.
func (c *Cluster) startProc(name, path string, args ...string) (*proc, error) {
	logPath := filepath.Join(c.Dir, "logs", name+".log")
	if err := os.MkdirAll(filepath.Dir(logPath), 0o750); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600) //nolint:gosec // G304: a log in the run directory
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(path, args...) //nolint:gosec // G204: the node's own components
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Dir = c.Dir
	cmd.Env = append(os.Environ(), "KUBECACHEDIR="+filepath.Join(c.Dir, "kubecache"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		_ = f.Close()
		close(p.done)
	}()
	c.procsMu.Lock()
	c.procs[name] = p
	c.procsMu.Unlock()
	c.opts.Logf("node: started %s (pid %d), log %s", name, cmd.Process.Pid, logPath)
	return p, nil
}

func (c *Cluster) getProc(name string) *proc {
	c.procsMu.Lock()
	defer c.procsMu.Unlock()
	return c.procs[name]
}

// procRunning reports whether the named process was started and still runs.
func (c *Cluster) procRunning(name string) bool {
	p := c.getProc(name)
	if p == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// stopProc sends SIGTERM and, after grace, SIGKILL.
func (c *Cluster) stopProc(name string, grace time.Duration) {
	p := c.getProc(name)
	if p == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		c.opts.Logf("node: %s did not exit %s after SIGTERM; killing it", name, grace)
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// logTail returns the last n lines of a process's log.
func (c *Cluster) logTail(name string, n int) string {
	p := c.getProc(name)
	if p == nil {
		return ""
	}
	b, _ := os.ReadFile(p.log)
	lines := strings.Split(string(bytes.TrimSpace(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "\n\t" + strings.Join(lines, "\n\t")
}
