package node

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// HostState is a snapshot of the host state the node could change: firewall
// rules, links, addresses, routes and policy rules, forwarding and the
// kernel tunables the kubelet cares about, the mounts and network
// namespaces a node makes, the hard-coded host paths, cgroups and node
// processes. Take one before Start and one after Stop and compare them with
// Diff. It deliberately leaves out what other tests on the machine change
// concurrently (network namespaces not named cni-*, and their mounts).
type HostState struct {
	// Sections maps a section name to its sorted lines.
	Sections map[string][]string
}

var (
	counters    = regexp.MustCompile(`\[\d+:\d+\]`)
	nftCounters = regexp.MustCompile(`counter packets \d+ bytes \d+`)
	expires     = regexp.MustCompile(`\s+expires \S+`)
)

// SnapshotHost records the host's state; see HostState. baseDir is where
// nodes keep their run directories ("" for DefaultBaseDir).
func SnapshotHost(baseDir string) (HostState, error) {
	if baseDir == "" {
		baseDir = DefaultBaseDir
	}
	h := HostState{Sections: map[string][]string{}}
	run := func(section string, filter func(string) string, name string, args ...string) {
		if _, err := exec.LookPath(name); err != nil {
			h.Sections[section] = []string{"(" + name + " not installed)"}
			return
		}
		out, err := exec.Command(name, args...).CombinedOutput() //nolint:gosec // G204: fixed read-only commands
		if err != nil {
			h.Sections[section] = []string{fmt.Sprintf("(%s failed: %v)", name, err)}
			return
		}
		var lines []string
		for _, l := range strings.Split(string(out), "\n") {
			if l = filter(l); l != "" {
				lines = append(lines, l)
			}
		}
		h.Sections[section] = lines
	}
	iptables := func(l string) string {
		if strings.HasPrefix(l, "#") {
			return ""
		}
		return counters.ReplaceAllString(l, "")
	}
	keep := func(l string) string { return strings.TrimSpace(l) }
	run("iptables", iptables, "iptables-save")
	run("ip6tables", iptables, "ip6tables-save")
	run("nft", func(l string) string { return strings.TrimSpace(nftCounters.ReplaceAllString(l, "")) }, "nft", "list", "ruleset")
	// Interface names and addresses, not indexes or statistics.
	run("links", func(l string) string {
		f := strings.Fields(l)
		if len(f) < 2 {
			return ""
		}
		return strings.TrimSuffix(f[1], ":")
	}, "ip", "-o", "link", "show")
	run("addresses", func(l string) string {
		f := strings.Fields(l)
		if len(f) < 4 {
			return ""
		}
		return f[1] + " " + f[2] + " " + f[3]
	}, "ip", "-o", "addr", "show")
	run("routes4", keep, "ip", "-4", "route", "show", "table", "all")
	run("routes6", func(l string) string { return strings.TrimSpace(expires.ReplaceAllString(l, "")) }, "ip", "-6", "route", "show", "table", "all")
	run("rules4", keep, "ip", "-4", "rule", "show")
	run("rules6", keep, "ip", "-6", "rule", "show")

	var sysctls []string
	names := []string{"net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding", "net.ipv4.conf.all.route_localnet",
		"net.bridge.bridge-nf-call-iptables", "net.bridge.bridge-nf-call-ip6tables"}
	for _, s := range kubeletSysctls {
		names = append(names, s.Name)
	}
	for _, name := range names {
		b, err := os.ReadFile("/proc/sys/" + strings.ReplaceAll(name, ".", "/"))
		v := strings.TrimSpace(string(b))
		if err != nil {
			v = "(absent)"
		}
		sysctls = append(sysctls, name+" = "+v)
	}
	h.Sections["sysctl"] = sysctls

	// Mounts a node makes: under the base directory, pod network namespaces,
	// overlay root filesystems, anything under the hard-coded paths.
	var mounts []string
	for _, m := range mountInfoFull() {
		p := m.point
		if strings.HasPrefix(p, baseDir+"/") || p == baseDir || m.fstype == "overlay" ||
			strings.HasPrefix(filepath.Base(p), "cni-") || strings.HasPrefix(p, "/run/containerd") ||
			strings.HasPrefix(p, hostKubeletDir) || strings.HasPrefix(p, "/var/lib/containerd") {
			mounts = append(mounts, p+" "+m.fstype)
		}
	}
	h.Sections["mounts"] = mounts

	var netns []string
	for _, p := range listNames(hostNetnsDir) {
		if strings.HasPrefix(filepath.Base(p), "cni-") {
			netns = append(netns, p)
		}
	}
	h.Sections["netns"] = netns

	var paths []string
	cands := append([]string{"/run/containerd", "/run/containerd/s", "/run/containerd/fifo", "/var/run/netns",
		"/var/log/containers", "/var/log/pods", "/var/lib/kubelet", "/var/lib/containerd", "/var/lib/cni",
		"/etc/cni", "/opt/cni", "/etc/kubernetes", "/run/runc", "/var/run/nri", baseDir}, cgroupK8sDirs()...)
	globbed, _ := filepath.Glob("/sys/fs/cgroup/*/kubepods*")
	cands = append(cands, globbed...)
	for _, p := range cands {
		if _, err := os.Lstat(p); err == nil {
			entries := listNames(p)
			if strings.HasPrefix(p, "/sys/fs/cgroup/") { // child cgroups, not control files
				entries = nil
				for _, e := range listNames(p) {
					if st, err := os.Stat(e); err == nil && st.IsDir() {
						entries = append(entries, e)
					}
				}
			}
			if p == baseDir { // the lock file stays; run directories must not
				entries = nil
				for _, e := range listNames(p) {
					if filepath.Base(e) != "lock" {
						entries = append(entries, e)
					}
				}
			}
			paths = append(paths, fmt.Sprintf("%s (%d entries)", p, len(entries)))
			if len(entries) <= 20 {
				for _, e := range entries {
					paths = append(paths, "  "+e)
				}
			}
		}
	}
	h.Sections["paths"] = paths

	// Node processes, by name.
	var procs []string
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "comm"))
		if err != nil {
			continue
		}
		if pid, err := strconv.Atoi(e.Name()); err != nil || !processAlive(pid) {
			continue // zombies wait for their new parent to reap them
		}
		comm := strings.TrimSpace(string(b))
		switch {
		case strings.HasPrefix(comm, "containerd"), comm == "kubelet", comm == "runc", comm == "pause",
			comm == "testapp", comm == "pilot-agent":
			procs = append(procs, comm)
		case comm == "kube-apiserver" || comm == "etcd" || strings.HasPrefix(comm, "kube-"):
			if cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline")); err == nil &&
				strings.Contains(string(cmdline), baseDir) {
				procs = append(procs, comm)
			}
		}
	}
	h.Sections["processes"] = procs

	for _, lines := range h.Sections {
		sort.Strings(lines)
	}
	// test/chart's self-managed test makes a bridge of its own, rsm<pid>, for
	// the webhook's endpoint address, while other suites may run: not the
	// node's doing.
	for _, section := range []string{"links", "addresses", "routes4", "routes6"} {
		h.Sections[section] = slices.DeleteFunc(h.Sections[section], chartTestBridge.MatchString)
	}
	return h, nil
}

// chartTestBridge matches the lines about test/chart's bridges (hostAddress).
var chartTestBridge = regexp.MustCompile(`\brsm\d+\b`)

type mountEntry struct{ point, fstype string }

// mountInfoFull returns mount points with their filesystem types.
func mountInfoFull() []mountEntry {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer func() { _ = f.Close() }()
	var out []mountEntry
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		for i, x := range fields {
			if x == "-" && i+1 < len(fields) && len(fields) > 4 {
				out = append(out, mountEntry{point: unescapeMount(fields[4]), fstype: fields[i+1]})
				break
			}
		}
	}
	return out
}

// Diff returns a readable difference between two snapshots ("" when they
// are equal): for each section, the lines only before (-) and only after
// (+).
func (h HostState) Diff(after HostState) string {
	names := map[string]bool{}
	for n := range h.Sections {
		names[n] = true
	}
	for n := range after.Sections {
		names[n] = true
	}
	sorted := make([]string, 0, len(names))
	for n := range names {
		sorted = append(sorted, n)
	}
	sort.Strings(sorted)
	var b strings.Builder
	for _, n := range sorted {
		before, now := count(h.Sections[n]), count(after.Sections[n])
		var lines []string
		for l, k := range before {
			for i := now[l]; i < k; i++ {
				lines = append(lines, "- "+l)
			}
		}
		for l, k := range now {
			for i := before[l]; i < k; i++ {
				lines = append(lines, "+ "+l)
			}
		}
		if len(lines) > 0 {
			sort.Strings(lines)
			fmt.Fprintf(&b, "[%s]\n  %s\n", n, strings.Join(lines, "\n  "))
		}
	}
	return b.String()
}

func count(lines []string) map[string]int {
	m := map[string]int{}
	for _, l := range lines {
		m[l]++
	}
	return m
}

// String prints the snapshot, section by section.
func (h HostState) String() string {
	names := make([]string, 0, len(h.Sections))
	for n := range h.Sections {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, n := range names {
		fmt.Fprintf(&b, "[%s]\n", n)
		for _, l := range h.Sections[n] {
			fmt.Fprintf(&b, "  %s\n", l)
		}
	}
	return b.String()
}

// RunCheckingHost snapshots the host's network and mount state (under
// baseDir), calls run, snapshots it again and returns run's exit code, or 1
// when a snapshot failed or the state changed. suite prefixes the messages;
// logf reports the identical state.
func RunCheckingHost(suite, baseDir string, run func() int, logf func(format string, args ...any)) int {
	before, err := SnapshotHost(baseDir)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: host snapshot before the node: %v\n", suite, err)
		return 1
	}
	code := run()
	after, err := SnapshotHost(baseDir)
	switch {
	case err != nil:
		fmt.Fprintf(os.Stderr, "%s: host snapshot after the node: %v\n", suite, err)
		code = 1
	case before.Diff(after) != "":
		fmt.Fprintf(os.Stderr, "%s: the host changed across the node's life:\n%s\n", suite, before.Diff(after))
		code = 1
	default:
		logf("host state identical before the node started and after it stopped (%d sections)", len(after.Sections))
	}
	return code
}
