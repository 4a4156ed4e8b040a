package node

import (
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// TestConfigTemplatesRender renders every template with the values Start
// uses and checks the settings the node depends on (see the recipe's
// "settings that are needed").
func TestConfigTemplatesRender(t *testing.T) {
	dir := t.TempDir()
	data := map[string]any{
		"Dir": dir, "Socket": dir + "/run/containerd.sock", "PauseImage": PauseImage, "CNIBinDir": "/usr/lib/cni",
		"Network": "remora-e2e-test", "Bridge": DefaultBridge, "Subnet": "10.244.78.0/24",
		"RangeStart": "10.244.78.10", "RangeEnd": "10.244.78.254", "NodeIP": "10.244.78.1",
		"Kubelet": "/bin/kubelet", "Sysctls": kubeletSysctls,
	}
	read := func(name string) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := render(name+".tmpl", p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(b), "<no value>") {
			t.Errorf("%s: unfilled placeholder:\n%s", name, b)
		}
		return string(b)
	}

	t.Run("kubelet", func(t *testing.T) {
		var cfg map[string]any
		if err := yaml.Unmarshal([]byte(read("kubelet.yaml")), &cfg); err != nil {
			t.Fatal(err)
		}
		for key, want := range map[string]any{
			"failCgroupV1":           false, // cgroup v1 machines
			"cgroupsPerQOS":          false, // no kubepods hierarchy on the host
			"makeIPTablesUtilChains": false, // no host iptables chains
			"address":                "10.244.78.1",
			"healthzPort":            float64(0),
			"resolvConf":             "",
			"protectKernelDefaults":  false, // with the fake /proc/sys in kubelet.sh
			"podLogsDir":             dir + "/podlogs",
		} {
			if got := cfg[key]; got != want {
				t.Errorf("%s = %#v, want %#v", key, got, want)
			}
		}
		if ev, ok := cfg["evictionHard"].(map[string]any); !ok || len(ev) != 0 {
			t.Errorf("evictionHard = %#v, want {}", cfg["evictionHard"])
		}
	})

	t.Run("kubelet wrapper", func(t *testing.T) {
		sh := read("kubelet.sh")
		if !strings.Contains(sh, "mount --make-rprivate /proc\n") {
			t.Error("the wrapper does not make /proc private before its bind mounts")
		}
		for _, s := range kubeletSysctls {
			if !strings.Contains(sh, "mount --bind "+dir+"/sysctl/"+s.Name+" /proc/sys/"+s.Path+"\n") {
				t.Errorf("no bind mount for %s:\n%s", s.Name, sh)
			}
		}
		if !strings.HasSuffix(sh, "exec /bin/kubelet \"$@\"\n") {
			t.Errorf("the wrapper does not exec the kubelet:\n%s", sh)
		}
	})

	t.Run("cni", func(t *testing.T) {
		var conf struct {
			Plugins []struct {
				Type      string `json:"type"`
				Bridge    string `json:"bridge"`
				IsGateway bool   `json:"isGateway"`
				IPMasq    bool   `json:"ipMasq"`
				IPAM      struct {
					Routes  []any `json:"routes"`
					DataDir string
				} `json:"ipam"`
			} `json:"plugins"`
		}
		if err := json.Unmarshal([]byte(read("cni.conflist")), &conf); err != nil {
			t.Fatal(err)
		}
		p := conf.Plugins[0]
		if p.Type != "bridge" || p.Bridge != DefaultBridge || p.IsGateway || p.IPMasq || len(p.IPAM.Routes) != 0 {
			t.Errorf("bridge plugin: %+v (want no gateway, no masquerade, no routes)", p)
		}
	})

	for _, name := range []string{"containerd.toml", "containerd2.toml"} {
		t.Run(name, func(t *testing.T) {
			toml := read(name)
			for _, want := range []string{
				"restrict_oom_score_adj = true",
				`address = "` + dir + `/run/containerd.sock"`,
				`root = "` + dir + `/containerd/root"`,
				`Root = "` + dir + `/run/runc"`,
				"SystemdCgroup = false",
				PauseImage,
			} {
				if !strings.Contains(toml, want) {
					t.Errorf("missing %q", want)
				}
			}
		})
	}
}

func TestLastAddr(t *testing.T) {
	for p, want := range map[string]string{
		"10.244.78.0/24": "10.244.78.255",
		"10.244.0.0/16":  "10.244.255.255",
		"10.1.2.16/28":   "10.1.2.31",
	} {
		if got := lastAddr(netip.MustParsePrefix(p)); got.String() != want {
			t.Errorf("lastAddr(%s) = %s, want %s", p, got, want)
		}
	}
}

func TestOptionsDefaults(t *testing.T) {
	t.Setenv("REMORA_NODE_SUBNET", "10.99.0.0/24")
	t.Setenv("REMORA_NODE_DIR", "")
	o := Options{RepoRoot: t.TempDir(), CNIBinDir: "/x"}
	if err := o.setDefaults(); err != nil {
		t.Fatal(err)
	}
	if o.Subnet.String() != "10.99.0.0/24" || o.BaseDir != DefaultBaseDir || o.Bridge != DefaultBridge ||
		o.K8sBinDir != filepath.Join(o.RepoRoot, "bin", "k8s") && os.Getenv("KUBEBUILDER_ASSETS") == "" {
		t.Errorf("defaults: %+v", o)
	}
	for _, bad := range []string{"fd00::/64", "10.0.0.0/8", "10.0.0.0/30"} {
		o := Options{RepoRoot: t.TempDir(), Subnet: netip.MustParsePrefix(bad)}
		if err := o.setDefaults(); err == nil {
			t.Errorf("subnet %s accepted", bad)
		}
	}
}

func TestUnescapeMount(t *testing.T) {
	if got := unescapeMount(`/tmp/a\040b\011c`); got != "/tmp/a b\tc" {
		t.Errorf("unescapeMount = %q", got)
	}
}

func TestProcessStartOfSelf(t *testing.T) {
	if processStart(os.Getpid()) == "" || !processAlive(os.Getpid()) {
		t.Error("own process not found in /proc")
	}
	if processStart(1<<30) != "" || processAlive(1<<30) {
		t.Error("a PID that cannot exist is alive")
	}
}

func TestHostStateDiff(t *testing.T) {
	before := HostState{Sections: map[string][]string{"links": {"eth0", "lo"}, "mounts": {"/a tmpfs", "/a tmpfs"}}}
	after := HostState{Sections: map[string][]string{"links": {"eth0", "lo", "remora-e2e0"}, "mounts": {"/a tmpfs"}}}
	if d := before.Diff(before); d != "" {
		t.Errorf("a snapshot differs from itself:\n%s", d)
	}
	d := before.Diff(after)
	for _, want := range []string{"[links]\n  + remora-e2e0", "[mounts]\n  - /a tmpfs"} {
		if !strings.Contains(d, want) {
			t.Errorf("diff lacks %q:\n%s", want, d)
		}
	}
}

func TestRunNetnsFromBundles(t *testing.T) {
	dir := t.TempDir()
	bundle := filepath.Join(dir, "containerd", "state", "io.containerd.runtime.v2.task", "k8s.io", "abc")
	if err := os.MkdirAll(bundle, 0o755); err != nil {
		t.Fatal(err)
	}
	spec := `{"linux":{"namespaces":[{"type":"pid"},{"type":"network","path":"/var/run/netns/cni-1234"}]}}`
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), []byte(spec), 0o644); err != nil {
		t.Fatal(err)
	}
	ids := containerIDs(dir)
	if len(ids) != 1 || ids[0] != "abc" {
		t.Fatalf("containerIDs = %v", ids)
	}
	s := &runState{Dir: dir, PreexistingEntries: listNames(hostNetnsDir)}
	got := runNetns(s, ids)
	found := false
	for _, p := range got {
		found = found || p == "/var/run/netns/cni-1234"
	}
	if !found {
		t.Errorf("runNetns = %v, want /var/run/netns/cni-1234", got)
	}
}

func TestInjectorValues(t *testing.T) {
	got := strings.Join(InjectorValues(), " ")
	for _, want := range []string{"values.global.hub=localhost/remora", "values.global.tag=test",
		"values.global.imagePullPolicy=Never", "values.global.proxy_init.image=" + InjectorImage} {
		if !strings.Contains(got, want) {
			t.Errorf("InjectorValues lacks %s", want)
		}
	}
	if ProxyImage != ImageHub+"/proxyv2:"+ImageTag {
		t.Errorf("the proxy image %s is not hub/proxyv2:tag, so injected pods would not find it", ProxyImage)
	}
}
