package testenv

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestStopSignalsTheProcessGroup: Stop reaches what the process started
// (here a shell's background sleep), not only the process itself, and a
// process that exits on the SIGTERM has stopped cleanly.
func TestStopSignalsTheProcessGroup(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "child.pid")
	p, err := Command{
		Name: "shell", LogPath: filepath.Join(dir, "logs", "shell.log"), Path: "/bin/sh",
		Args: []string{"-c", `sleep 60 & echo $! > "$CHILD_PID_FILE"; echo started; wait`},
		Env:  []string{"CHILD_PID_FILE=" + pidFile},
	}.Start()
	if err != nil {
		t.Fatal(err)
	}
	var child int
	deadline := time.Now().Add(10 * time.Second)
	for child == 0 {
		if b, err := os.ReadFile(pidFile); err == nil && strings.HasSuffix(string(b), "\n") {
			if child, err = strconv.Atoi(strings.TrimSpace(string(b))); err != nil {
				t.Fatal(err)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the shell did not start its child: %s", p.LogTail(5))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !p.Running() {
		t.Fatal("the shell exited early")
	}
	if err := p.Stop(5 * time.Second); err != nil {
		t.Errorf("Stop: %v, want a clean stop on SIGTERM", err)
	}
	if p.Running() {
		t.Error("the shell still runs after Stop")
	}
	for {
		err := syscall.Kill(child, 0)
		if errors.Is(err, syscall.ESRCH) || zombie(child) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the shell's child %d still runs after Stop (kill -0: %v): the group was not signalled", child, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := p.LogTail(1); got != "started" {
		t.Errorf("log tail %q, want the shell's output", got)
	}
}

// zombie reports whether pid has exited but not been reaped yet (its new
// parent, the init process, may be slow to).
func zombie(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// pid (comm) state ...: comm may hold spaces, the state follows the last ")".
	i := strings.LastIndex(string(b), ") ")
	return i >= 0 && strings.HasPrefix(string(b)[i+2:], "Z")
}
