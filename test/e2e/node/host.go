package node

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Host paths containerd 1.6 and the kubelet hard-code. Stop removes what the
// node put there, and each directory that did not exist before.
const (
	hostContainerdDir = "/run/containerd"
	hostShimDir       = "/run/containerd/s"    // shim sockets
	hostFifoDir       = "/run/containerd/fifo" // task I/O fifos
	hostNetnsDir      = "/var/run/netns"       // pod network namespaces (cni-*)
	hostContainerLogs = "/var/log/containers"  // symlinks to the pod logs
	hostKubeletDir    = "/var/lib/kubelet"
	hostDevicePlugins = "/var/lib/kubelet/device-plugins" // the kubelet's device-plugin socket
	hostCNICache      = "/var/lib/cni"                    // libcni's result cache
)

var trackedHostDirs = []string{hostContainerdDir, hostShimDir, hostFifoDir, hostNetnsDir, hostContainerLogs,
	hostKubeletDir, hostDevicePlugins, hostCNICache}

// runState is what a run did to the host, saved in Dir/state.json as it
// happens, so that Stop, or the next Start after a crash, can undo it.
type runState struct {
	Dir      string `json:"dir"`
	OwnerPID int    `json:"ownerPID"`
	// OwnerStart is the owner's start time (/proc/PID/stat field 22), so a
	// reused PID is not mistaken for the owner.
	OwnerStart string `json:"ownerStart"`
	Network    string `json:"network"` // CNI network name
	Bridge     string `json:"bridge"`
	// BridgeCreated: Start created Bridge (delete it).
	BridgeCreated bool `json:"bridgeCreated"`
	// SharedMount: Dir is bind-mounted on itself, shared.
	SharedMount bool `json:"sharedMount"`
	// PreexistingDirs are the trackedHostDirs and cgroup k8s.io directories
	// that existed before the run.
	PreexistingDirs []string `json:"preexistingDirs"`
	// PreexistingEntries are the entries of the shared host directories
	// (netns, shim sockets, fifos) before the run.
	PreexistingEntries []string `json:"preexistingEntries"`
}

func (s *runState) save() error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(s.Dir, "state.json.tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(s.Dir, "state.json"))
}

func loadState(dir string) (*runState, error) {
	b, err := os.ReadFile(filepath.Join(dir, "state.json")) //nolint:gosec // G304: a run directory of ours
	if err != nil {
		return nil, err
	}
	var s runState
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, err
	}
	if s.Dir != dir {
		return nil, fmt.Errorf("%s: state is for %s", dir, s.Dir)
	}
	return &s, nil
}

func cgroupK8sDirs() []string {
	dirs, _ := filepath.Glob("/sys/fs/cgroup/*/k8s.io")
	if _, err := os.Stat("/sys/fs/cgroup/k8s.io"); err == nil { // cgroup v2
		dirs = append(dirs, "/sys/fs/cgroup/k8s.io")
	}
	return dirs
}

func listNames(dir string) []string {
	entries, _ := os.ReadDir(dir)
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, filepath.Join(dir, e.Name()))
	}
	return names
}

// newRunState makes the run directory and records the host before the run
// changes anything.
func newRunState(c *Cluster) (*runState, error) {
	if err := os.MkdirAll(c.Dir, 0o700); err != nil {
		return nil, err
	}
	s := &runState{Dir: c.Dir, OwnerPID: os.Getpid(), OwnerStart: processStart(os.Getpid()),
		Network: "remora-e2e-" + filepath.Base(c.Dir), Bridge: c.Bridge}
	for _, d := range append(slices.Clone(trackedHostDirs), cgroupK8sDirs()...) {
		if _, err := os.Lstat(d); err == nil {
			s.PreexistingDirs = append(s.PreexistingDirs, d)
		}
	}
	for _, d := range []string{hostNetnsDir, hostShimDir, hostFifoDir} {
		s.PreexistingEntries = append(s.PreexistingEntries, listNames(d)...)
	}
	return s, s.save()
}

// prepareHost checks that the node will not clash with anything on the host,
// then creates the bridge and the shared bind mount of Dir.
func (c *Cluster) prepareHost() error {
	// Another kubelet on this machine owns the hard-coded device-plugin socket.
	if _, err := os.Lstat(filepath.Join(hostDevicePlugins, "kubelet.sock")); err == nil {
		return fmt.Errorf("%s/kubelet.sock exists: another kubelet runs on this machine", hostDevicePlugins)
	}
	if _, err := net.InterfaceByName(c.Bridge); err == nil {
		return fmt.Errorf("interface %s already exists (set Options.Bridge, or remove it: ip link del %s)", c.Bridge, c.Bridge)
	}
	if err := subnetUnused(c.Subnet); err != nil {
		return err
	}

	// Dir bind-mounted on itself and made shared: the kubelet runs in its own
	// mount namespace (see kubelet.sh.tmpl) and the mounts it makes under
	// Dir must propagate back to the host's, where containerd and runc run.
	if err := unix.Mount(c.Dir, c.Dir, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind mount %s: %w", c.Dir, err)
	}
	c.state.SharedMount = true
	if err := c.state.save(); err != nil {
		return err
	}
	if err := unix.Mount("", c.Dir, "", unix.MS_SHARED, ""); err != nil {
		return fmt.Errorf("make %s shared: %w", c.Dir, err)
	}

	// The bridge: no ports but the pods' veths, so nothing on it leaves the
	// machine. Its address is the node IP; the CNI plugin attaches pods to it
	// without making it a gateway (no ip_forward, no masquerade).
	if out, err := exec.Command("ip", "link", "add", c.Bridge, "type", "bridge").CombinedOutput(); err != nil { //nolint:gosec // G204: the bridge's name from Options
		return fmt.Errorf("ip link add %s: %w: %s", c.Bridge, err, out)
	}
	c.state.BridgeCreated = true
	if err := c.state.save(); err != nil {
		return err
	}
	for _, args := range [][]string{
		{"addr", "add", netip.PrefixFrom(c.NodeIP, c.Subnet.Bits()).String(), "dev", c.Bridge},
		{"link", "set", c.Bridge, "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil { //nolint:gosec // G204: our bridge and address
			return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, out)
		}
	}
	return nil
}

// subnetUnused fails when an address or route on the host overlaps p: the
// node only uses addresses it created.
func subnetUnused(p netip.Prefix) error {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return err
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			ones, _ := n.Mask.Size()
			ip, _ := netip.AddrFromSlice(n.IP)
			if q := netip.PrefixFrom(ip.Unmap(), ones); q.IsValid() && q.Overlaps(p) {
				return fmt.Errorf("subnet %s overlaps %s on the host: choose another (Options.Subnet, REMORA_NODE_SUBNET)", p, q)
			}
		}
	}
	out, err := exec.Command("ip", "-4", "route", "show", "table", "all").Output()
	if err != nil {
		return fmt.Errorf("ip route: %w", err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		dst := f[0]
		if dst == "local" || dst == "broadcast" || dst == "unicast" {
			if len(f) < 2 {
				continue
			}
			dst = f[1]
		}
		if dst == "default" {
			continue
		}
		if !strings.Contains(dst, "/") {
			dst += "/32"
		}
		if q, err := netip.ParsePrefix(dst); err == nil && q.Overlaps(p) {
			return fmt.Errorf("subnet %s overlaps the route %q on the host: choose another (Options.Subnet, REMORA_NODE_SUBNET)", p, line)
		}
	}
	return nil
}

// acquireLock takes an exclusive flock on path, waiting up to timeout. The
// kernel releases it when the process exits, however it exits. The holder
// may remove the file when it is done (releaseLock), so a lock is only good
// if path still names the locked file.
func acquireLock(ctx context.Context, path string, timeout time.Duration, logf func(string, ...any)) (*os.File, error) {
	deadline := time.Now().Add(timeout)
	for logged := false; ; {
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, err
		}
		f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600) //nolint:gosec // G304: the lock in the base directory
		if err != nil {
			return nil, err
		}
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			var held, now unix.Stat_t
			if unix.Fstat(int(f.Fd()), &held) == nil && unix.Stat(path, &now) == nil && held.Ino == now.Ino && held.Dev == now.Dev {
				return f, nil
			}
			_ = f.Close() // the previous holder removed it: lock the new file
			continue
		}
		_ = f.Close()
		if !errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		if !logged {
			logf("node: another e2e node runs on this machine; waiting up to %s for %s", timeout, path)
			logged = true
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("another e2e node still holds %s after %s", path, timeout)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// releaseLock removes the lock file, and the base directory when nothing
// else is left in it, then unlocks: a node leaves no trace on the host.
func releaseLock(f *os.File, baseDir string) {
	lockPath := filepath.Join(baseDir, "lock")
	if entries, err := os.ReadDir(baseDir); err == nil && len(entries) == 1 && entries[0].Name() == "lock" {
		_ = os.Remove(lockPath)
		_ = os.Remove(baseDir)
	}
	_ = f.Close()
}

// runDirName matches the run directories Start makes: r<pid>-<6 hex>.
var runDirName = regexp.MustCompile(`^r[0-9]+-[0-9a-f]{6}$`)

// sweepStale tears down the runs in baseDir left by processes that died
// before they could stop. The caller holds the lock, so no other run is live.
func sweepStale(baseDir string, logf func(string, ...any)) {
	entries, _ := os.ReadDir(baseDir)
	for _, e := range entries {
		if !e.IsDir() || !runDirName.MatchString(e.Name()) {
			continue
		}
		dir := filepath.Join(baseDir, e.Name())
		s, err := loadState(dir)
		if err != nil {
			if len(mountsUnder(dir)) == 0 {
				_ = os.RemoveAll(dir)
			}
			continue
		}
		if s.OwnerPID != os.Getpid() && processAlive(s.OwnerPID) && processStart(s.OwnerPID) == s.OwnerStart {
			// Its owner still runs: another test binary that does not honour
			// this lock (an older build). Leave it alone.
			logf("node: %s belongs to the running process %d; leaving it", dir, s.OwnerPID)
			continue
		}
		logf("node: cleaning up the run in %s left by process %d", dir, s.OwnerPID)
		if errs := teardown(s, logf); len(errs) > 0 {
			logf("node: cleanup of %s: %v", dir, errors.Join(errs...))
		}
	}
}

// teardown removes everything a run made on the host. It works from the
// run's state and directory alone, without containerd or the kubelet, so it
// also cleans up after a crash. Every step runs even if an earlier one fails.
func teardown(s *runState, logf func(string, ...any)) []error {
	var errs []error
	add := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	// 1. Processes: every process whose command line names the run directory
	// (containerd, its shims, the kubelet, the control plane), and every
	// process in one of the run's container cgroups.
	ids := containerIDs(s.Dir)
	add(killProcesses(s.Dir, ids))

	// 2. Containers runc still knows about: delete --force kills and removes
	// them (and their cgroups).
	runcRoot := filepath.Join(s.Dir, "run", "runc", "k8s.io")
	for _, id := range ids {
		if _, err := os.Stat(filepath.Join(runcRoot, id)); err == nil {
			if out, err := exec.Command("runc", "--root", runcRoot, "delete", "--force", id).CombinedOutput(); err != nil { //nolint:gosec // G204: a container of the run
				logf("node: runc delete %s: %v: %s", id, err, strings.TrimSpace(string(out)))
			}
		}
	}

	// 3. Pod network namespaces: the ones the run's containers used, and any
	// cni-* namespace that appeared during the run.
	for _, ns := range runNetns(s, ids) {
		add(removeNetns(ns))
	}

	// 4. Mounts under the run directory, deepest first; the directory's own
	// shared bind mount last.
	add(unmountUnder(s.Dir))

	// 5. The bridge. Deleting it also deletes any veth still attached.
	if s.BridgeCreated {
		if _, err := net.InterfaceByName(s.Bridge); err == nil {
			if out, err := exec.Command("ip", "link", "del", s.Bridge).CombinedOutput(); err != nil { //nolint:gosec // G204: the bridge the run created
				add(fmt.Errorf("ip link del %s: %w: %s", s.Bridge, err, out))
			}
		}
	}

	// 6. Cgroups of the run's containers, and k8s.io itself when the run
	// made it.
	add(removeCgroups(s, ids))

	// 7. Host paths containerd and the kubelet hard-code.
	add(cleanHostPaths(s, ids))

	// 8. The run directory, once nothing is mounted under it.
	if m := mountsUnder(s.Dir); len(m) > 0 {
		add(fmt.Errorf("not removing %s: still mounted: %v", s.Dir, m))
	} else if err := os.RemoveAll(s.Dir); err != nil {
		add(err)
	}
	return errs
}

// containerIDs lists the containers (and sandboxes) of a run, from runc's and
// containerd's state directories.
func containerIDs(dir string) []string {
	seen := map[string]bool{}
	var ids []string
	for _, d := range []string{
		filepath.Join(dir, "run", "runc", "k8s.io"),
		filepath.Join(dir, "containerd", "state", "io.containerd.runtime.v2.task", "k8s.io"),
	} {
		entries, _ := os.ReadDir(d)
		for _, e := range entries {
			if e.IsDir() && !seen[e.Name()] {
				seen[e.Name()] = true
				ids = append(ids, e.Name())
			}
		}
	}
	sort.Strings(ids)
	return ids
}

// killProcesses SIGKILLs every process whose command line contains dir, or
// that is in one of the cgroups k8s.io/<id>.
func killProcesses(dir string, ids []string) error {
	self := os.Getpid()
	pids := map[int]bool{}
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil || pid == self || pid == 1 {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", p.Name(), "cmdline")) //nolint:gosec // G304: /proc
		if err != nil {
			continue
		}
		// An argument that is dir, or a path under it (arguments end in NUL).
		if cmdline := string(b); strings.Contains(cmdline, dir+"/") || strings.Contains(cmdline, dir+"\x00") {
			pids[pid] = true
		}
	}
	for _, cg := range cgroupK8sDirs() {
		for _, id := range ids {
			b, err := os.ReadFile(filepath.Join(cg, id, "cgroup.procs")) //nolint:gosec // G304: a cgroup of the run
			if err != nil {
				continue
			}
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil && pid != self && pid != 1 {
					pids[pid] = true
				}
			}
		}
	}
	for pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	// Wait (bounded) for them to go, so their mounts and sockets are released.
	deadline := time.Now().Add(10 * time.Second)
	for pid := range pids {
		for processAlive(pid) {
			if time.Now().After(deadline) {
				return fmt.Errorf("process %d did not exit after SIGKILL", pid)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return nil
}

// processStart returns a process's start time in clock ticks since boot
// (field 22 of /proc/PID/stat), or "" if it does not exist.
func processStart(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)) //nolint:gosec // G304: /proc
	if err != nil {
		return ""
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return ""
	}
	f := strings.Fields(s[i+1:]) // f[0] is field 3 (state)
	if len(f) < 20 {
		return ""
	}
	return f[19]
}

// processAlive reports whether pid exists and is not a zombie.
func processAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// pid (comm) state ...: the state follows the last ')'.
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] != 'Z'
	}
	return true
}

// runNetns returns the network namespace files of a run: those its
// containers' OCI specs name, and cni-* files that appeared during the run.
func runNetns(s *runState, ids []string) []string {
	seen := map[string]bool{}
	var out []string
	addPath := func(p string) {
		if p != "" && !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	bundles := filepath.Join(s.Dir, "containerd", "state", "io.containerd.runtime.v2.task", "k8s.io")
	for _, id := range ids {
		b, err := os.ReadFile(filepath.Join(bundles, id, "config.json")) //nolint:gosec // G304: an OCI bundle of the run
		if err != nil {
			continue
		}
		var spec struct {
			Linux struct {
				Namespaces []struct {
					Type string `json:"type"`
					Path string `json:"path"`
				} `json:"namespaces"`
			} `json:"linux"`
		}
		if json.Unmarshal(b, &spec) == nil {
			for _, ns := range spec.Linux.Namespaces {
				if ns.Type == "network" && strings.HasPrefix(ns.Path, hostNetnsDir+"/") {
					addPath(ns.Path)
				}
			}
		}
	}
	for _, p := range listNames(hostNetnsDir) {
		if strings.HasPrefix(filepath.Base(p), "cni-") && !slices.Contains(s.PreexistingEntries, p) {
			addPath(p)
		}
	}
	return out
}

func removeNetns(p string) error {
	if _, err := os.Lstat(p); err != nil {
		return nil
	}
	for range 4 { // a file can be mounted more than once
		if err := unix.Unmount(p, unix.MNT_DETACH); err != nil {
			break
		}
	}
	if err := os.Remove(p); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("remove netns %s: %w", p, err)
	}
	return nil
}

// mountInfo returns the mount points in /proc/self/mountinfo, in order.
func mountInfo() []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer func() { _ = f.Close() }()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) > 4 {
			out = append(out, unescapeMount(f[4]))
		}
	}
	return out
}

// unescapeMount undoes the octal escapes (\040 for space) of mountinfo.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// mountsUnder returns the mount points at or under dir.
func mountsUnder(dir string) []string {
	var out []string
	for _, m := range mountInfo() {
		if m == dir || strings.HasPrefix(m, dir+"/") {
			out = append(out, m)
		}
	}
	return out
}

// unmountUnder unmounts everything at or under dir, deepest (and latest)
// first, lazily if a mount is busy.
func unmountUnder(dir string) error {
	for round := 0; round < 8; round++ {
		mounts := mountsUnder(dir)
		if len(mounts) == 0 {
			return nil
		}
		// Later mounts first, then deeper paths first.
		slices.Reverse(mounts)
		sort.SliceStable(mounts, func(i, j int) bool {
			return strings.Count(mounts[i], "/") > strings.Count(mounts[j], "/")
		})
		for _, m := range mounts {
			if err := unix.Unmount(m, 0); err != nil {
				_ = unix.Unmount(m, unix.MNT_DETACH)
			}
		}
	}
	if m := mountsUnder(dir); len(m) > 0 {
		return fmt.Errorf("still mounted under %s: %v", dir, m)
	}
	return nil
}

// removeCgroups removes the cgroups of the run's containers in every
// hierarchy, and k8s.io itself (with anything left in it) when the run made
// it. Only empty cgroups can be removed; their processes are already dead.
func removeCgroups(s *runState, ids []string) error {
	var errs []error
	for _, cg := range cgroupK8sDirs() {
		var dirs []string
		if slices.Contains(s.PreexistingDirs, cg) {
			for _, id := range ids {
				dirs = append(dirs, filepath.Join(cg, id))
			}
		} else {
			_ = filepath.WalkDir(cg, func(p string, d os.DirEntry, err error) error {
				if err == nil && d.IsDir() {
					dirs = append(dirs, p)
				}
				return nil
			})
		}
		// Children before parents.
		sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
		for _, d := range dirs {
			if err := rmdirRetry(d); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// rmdirRetry removes an (empty) cgroup directory; the kernel may need a
// moment after the last process exits.
func rmdirRetry(d string) error {
	var err error
	for range 20 {
		err = unix.Rmdir(d)
		if err == nil || errors.Is(err, unix.ENOENT) {
			return nil
		}
		if !errors.Is(err, unix.EBUSY) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("rmdir %s: %w", d, err)
}

// cleanHostPaths removes what the run left in the hard-coded host paths and
// each of them that did not exist before the run.
func cleanHostPaths(s *runState, ids []string) error {
	var errs []error
	pre := func(d string) bool { return slices.Contains(s.PreexistingDirs, d) }
	rmdirIfNew := func(d string) {
		if pre(d) {
			return
		}
		if err := os.Remove(d); err != nil && !os.IsNotExist(err) {
			errs = append(errs, fmt.Errorf("remove %s: %w", d, err))
		}
	}
	// Log symlinks pointing into the run directory.
	for _, l := range listNames(hostContainerLogs) {
		if t, err := os.Readlink(l); err == nil && strings.HasPrefix(t, s.Dir+"/") {
			_ = os.Remove(l)
		}
	}
	rmdirIfNew(hostContainerLogs)
	// The kubelet's device-plugin socket (Start refuses to run when it exists).
	_ = os.Remove(filepath.Join(hostDevicePlugins, "kubelet.sock"))
	if !pre(hostDevicePlugins) {
		_ = os.Remove(filepath.Join(hostDevicePlugins, "DEPRECATION"))
	}
	rmdirIfNew(hostDevicePlugins)
	rmdirIfNew(hostKubeletDir)
	// Shim sockets and fifos that appeared during the run.
	for _, d := range []string{hostShimDir, hostFifoDir} {
		for _, p := range listNames(d) {
			if !slices.Contains(s.PreexistingEntries, p) {
				_ = os.RemoveAll(p)
			}
		}
		rmdirIfNew(d)
	}
	rmdirIfNew(hostContainerdDir)
	rmdirIfNew(hostNetnsDir)
	// libcni's result cache (NETWORK-CONTAINERID-IFNAME; containerd's
	// loopback network is cni-loopback): our network's and our containers'.
	if pre(hostCNICache) {
		patterns := []string{s.Network + "-*"}
		for _, id := range ids {
			patterns = append(patterns, "*-"+id+"-*")
		}
		for _, pat := range patterns {
			matches, _ := filepath.Glob(filepath.Join(hostCNICache, "results", pat))
			for _, m := range matches {
				_ = os.RemoveAll(m)
			}
		}
	} else if err := os.RemoveAll(hostCNICache); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
