package testenv

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Process is a child process run in its own process group, so that a signal
// (Signal, Stop) reaches anything it started too. On Linux it also gets
// SIGKILL if the test binary dies without stopping it (a panic or a test
// timeout).
type Process struct {
	// Name identifies the process in errors.
	Name string
	// LogPath is the file its stdout and stderr go to.
	LogPath string

	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// Command describes a process to start.
type Command struct {
	// Name identifies the process in errors.
	Name string
	// LogPath is the file its stdout and stderr are appended to; its
	// directory is created if missing.
	LogPath string
	// Path is the executable; Args its arguments.
	Path string
	Args []string
	// Dir is the working directory (default: the test's).
	Dir string
	// Env is added to the test's environment.
	Env []string
}

// StartProcess starts path with args, its output appended to logPath.
func StartProcess(name, logPath, path string, args ...string) (*Process, error) {
	return Command{Name: name, LogPath: logPath, Path: path, Args: args}.Start()
}

// Start starts the command in a process group of its own.
func (c Command) Start() (*Process, error) {
	if err := os.MkdirAll(filepath.Dir(c.LogPath), 0o750); err != nil {
		return nil, fmt.Errorf("the log directory of %s: %w", c.Name, err)
	}
	logFile, err := os.OpenFile(filepath.Clean(c.LogPath), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening the log of %s: %w", c.Name, err)
	}
	cmd := exec.Command(c.Path, c.Args...) //nolint:gosec // running the binaries it is given is the harness's job
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Dir = c.Dir
	if len(c.Env) > 0 {
		cmd.Env = append(os.Environ(), c.Env...)
	}
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		_ = logFile.Close()
		return nil, fmt.Errorf("starting %s: %w", c.Name, err)
	}
	p := &Process{Name: c.Name, LogPath: c.LogPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		_ = logFile.Close()
		close(p.done)
	}()
	return p, nil
}

// Pid returns the process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Running reports whether the process has not exited yet.
func (p *Process) Running() bool {
	exited, _ := p.Exited()
	return !exited
}

// Exited reports whether the process has exited, and its error if so.
func (p *Process) Exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// Signal sends sig to the process group.
func (p *Process) Signal(sig syscall.Signal) error {
	if err := syscall.Kill(-p.cmd.Process.Pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signalling %s: %w", p.Name, err)
	}
	return nil
}

// Wait waits up to timeout for the process to exit and returns its exit
// error (nil for exit status 0).
func (p *Process) Wait(timeout time.Duration) error {
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		return fmt.Errorf("%s did not exit within %v", p.Name, timeout)
	}
}

// Stop sends SIGTERM to the process group, waits up to grace, then kills the
// group. It returns the exit error of a process that failed on its own;
// exiting on the SIGTERM, with status 0 or killed by the signal, is success.
func (p *Process) Stop(grace time.Duration) error {
	if exited, err := p.Exited(); exited {
		return err
	}
	if err := p.Signal(syscall.SIGTERM); err != nil {
		return err
	}
	err := p.Wait(grace)
	if exited, _ := p.Exited(); !exited {
		_ = p.Signal(syscall.SIGKILL)
		<-p.done
		return nil
	}
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) {
		if ws, ok := exitErr.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGTERM {
			return nil
		}
	}
	return err
}

// LogTail returns the last n lines of the process's log.
func (p *Process) LogTail(n int) string {
	b, err := os.ReadFile(p.LogPath)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
