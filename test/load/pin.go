package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// pinSelf moves every thread of this process (and so every process it
// starts later) off the first CPU it may run on, and returns that CPU, for
// the servers, and the others. With pin false or fewer than 2 CPUs nothing
// moves and both are "".
func pinSelf(pin bool) (server, others string, err error) {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return "", "", fmt.Errorf("reading this process's CPUs: %w", err)
	}
	if !pin || set.Count() < 2 {
		return "", "", nil
	}
	if _, err := exec.LookPath("taskset"); err != nil {
		return "", "", fmt.Errorf("-pin needs taskset (util-linux) to start the servers on one CPU: %w", err)
	}
	first, n := -1, set.Count()
	var rest []string
	for cpu := 0; cpu < 1024 && len(rest) < n-1; cpu++ {
		if !set.IsSet(cpu) {
			continue
		}
		if first < 0 {
			first = cpu
			set.Clear(cpu)
			continue
		}
		rest = append(rest, strconv.Itoa(cpu))
	}
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return "", "", err
	}
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		// A thread may have exited since the listing.
		if err := unix.SchedSetaffinity(tid, &set); err != nil && err != unix.ESRCH {
			return "", "", fmt.Errorf("moving thread %d off CPU %d: %w", tid, first, err)
		}
	}
	return strconv.Itoa(first), strings.Join(rest, ","), nil
}

// pinned is the command running bin with args, on cpus when not empty
// (taskset execs bin, so the process keeps its pid).
func pinned(cpus, bin string, args ...string) *exec.Cmd {
	if cpus == "" {
		return exec.Command(bin, args...)
	}
	return exec.Command("taskset", append([]string{"-c", cpus, bin}, args...)...)
}

// clockTick is the unit of /proc/PID/stat's times (USER_HZ, 100 on every
// Linux architecture Go supports).
const clockTick = 10 * time.Millisecond

// cpuOf returns the CPU time process pid has used, user and system, all
// threads (fields 14 and 15 of /proc/PID/stat); 0 if it cannot be read.
func cpuOf(pid int) time.Duration {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0
	}
	// The command name (field 2) may hold spaces; fields after it start
	// with the state, field 3.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0
	}
	return time.Duration(utime+stime) * clockTick
}
