package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// memoryCgroup is a memory cgroup with a hard limit that the injector runs
// in, as a container's memory limit would hold it: cgroup v1 (the memory
// controller's hierarchy, memory.limit_in_bytes) or v2 (memory.max).
type memoryCgroup struct {
	dir string
	v2  bool
}

const (
	cgroupRoot   = "/sys/fs/cgroup"
	cgroupV1Root = "/sys/fs/cgroup/memory"
)

// newMemoryCgroup creates a cgroup named name limited to limit bytes, swap
// off.
func newMemoryCgroup(name string, limit int64) (*memoryCgroup, error) {
	var cg *memoryCgroup
	switch {
	case exists(filepath.Join(cgroupRoot, "cgroup.controllers")):
		controllers, err := os.ReadFile(filepath.Join(cgroupRoot, "cgroup.subtree_control"))
		if err != nil || !strings.Contains(string(controllers), "memory") {
			if err := os.WriteFile(filepath.Join(cgroupRoot, "cgroup.subtree_control"), []byte("+memory"), 0o600); err != nil {
				return nil, fmt.Errorf("enabling the memory controller for child cgroups (cgroup v2): %w", err)
			}
		}
		cg = &memoryCgroup{dir: filepath.Join(cgroupRoot, name), v2: true}
	case exists(filepath.Join(cgroupV1Root, "memory.limit_in_bytes")):
		cg = &memoryCgroup{dir: filepath.Join(cgroupV1Root, name)}
	default:
		return nil, errors.New("no memory cgroup controller at " + cgroupRoot + " (v2) or " + cgroupV1Root + " (v1)")
	}
	if err := os.Mkdir(cg.dir, 0o750); err != nil {
		return nil, fmt.Errorf("creating the memory cgroup (root needed): %w", err)
	}
	limitFile, swapFile := "memory.limit_in_bytes", "memory.memsw.limit_in_bytes"
	if cg.v2 {
		limitFile, swapFile = "memory.max", "memory.swap.max"
	}
	if err := cg.write(limitFile, strconv.FormatInt(limit, 10)); err != nil {
		_ = cg.remove()
		return nil, err
	}
	if exists(filepath.Join(cg.dir, swapFile)) {
		swap := "0"
		if !cg.v2 {
			swap = strconv.FormatInt(limit, 10) // v1 counts memory plus swap
		}
		if err := cg.write(swapFile, swap); err != nil {
			_ = cg.remove()
			return nil, err
		}
	}
	return cg, nil
}

// version names the cgroup version.
func (cg *memoryCgroup) version() string {
	if cg.v2 {
		return "cgroup v2"
	}
	return "cgroup v1"
}

// wrapper returns the command that enters the cgroup, then execs what
// follows it (the pid stays the same, so /proc/PID is the injector's).
func (cg *memoryCgroup) wrapper() []string {
	return []string{"/bin/sh", "-c", `echo $$ > "$0/cgroup.procs" && exec "$@"`, cg.dir}
}

// oomKills returns how many processes the kernel killed in the cgroup for
// lack of memory (v1 memory.oom_control oom_kill, v2 memory.events
// oom_kill).
func (cg *memoryCgroup) oomKills() (int64, error) {
	file := "memory.oom_control"
	if cg.v2 {
		file = "memory.events"
	}
	b, err := os.ReadFile(filepath.Join(cg.dir, file))
	if err != nil {
		return 0, err
	}
	return keyedValue(b, "oom_kill")
}

// peak returns the cgroup's peak memory usage (page cache included), or 0
// where the kernel does not keep one.
func (cg *memoryCgroup) peak() int64 {
	file := "memory.max_usage_in_bytes"
	if cg.v2 {
		file = "memory.peak"
	}
	b, err := os.ReadFile(filepath.Join(cg.dir, file))
	if err != nil {
		return 0
	}
	v, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	return v
}

// remove deletes the cgroup once its processes have exited.
func (cg *memoryCgroup) remove() error {
	var err error
	for range 50 {
		if err = os.Remove(cg.dir); err == nil || os.IsNotExist(err) {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("removing cgroup %s: %w", cg.dir, err)
}

func (cg *memoryCgroup) write(file, value string) error {
	if err := os.WriteFile(filepath.Join(cg.dir, file), []byte(value), 0o600); err != nil {
		return fmt.Errorf("setting %s of %s: %w", file, cg.dir, err)
	}
	return nil
}

// keyedValue returns the value of key in a cgroup file of "key value"
// lines.
func keyedValue(b []byte, key string) (int64, error) {
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), " ")
		if ok && k == key {
			return strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		}
	}
	return 0, fmt.Errorf("no %s in %q", key, b)
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
