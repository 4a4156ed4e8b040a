package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// The istio-init arguments of two injection goldens,
// conformance/istio-inject/inject/traffic-params.yaml.injected and
// traffic-annotations.yaml.injected, as the container receives them
// (YAML '*' is *, "" is an empty argument).
var (
	trafficParamsArgs = []string{"-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT",
		"-i", "127.0.0.1/24,10.96.0.1/24", "-x", "10.96.0.2/24,10.96.0.3/24", "-b", "*", "-d", "15090,15021,4,5,6",
		"--log_output_level=default:info"}
	trafficAnnotationsArgs = []string{"-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT",
		"-i", "127.0.0.1/24,10.96.0.1/24", "-x", "10.96.0.2/24,10.96.0.3/24", "-b", "1,2,3", "-d", "15090,15021,4,5,6,15020",
		"-o", "7,8,9", "--log_output_level=default:info"}
	helloArgs = []string{"-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT",
		"-i", "*", "-x", "", "-b", "*", "-d", "15090,15021,15020", "--log_output_level=default:info"}
)

func runRoot(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	root := newRootCmd()
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(args)
	err = root.ExecuteContext(t.Context())
	return out.String(), errOut.String(), err
}

// ruleIndex returns the line number of rule in out, failing if it is absent.
func ruleIndex(t *testing.T, out, rule string) int {
	t.Helper()
	for i, line := range strings.Split(out, "\n") {
		if line == rule {
			return i
		}
	}
	t.Errorf("dry-run output has no rule %q", rule)
	return -1
}

func TestIptablesDryRun(t *testing.T) {
	tests := []struct {
		name string
		args []string
		// want are rules that must be printed, in this order.
		want []string
		// notWant are rules that must not be printed.
		notWant []string
	}{
		{
			name: "traffic-params golden: CIDR includes and excludes, inbound excludes",
			args: append([]string{"istio-iptables", "--dry-run"}, trafficParamsArgs...),
			want: []string{
				"-A PREROUTING -p tcp -j ISTIO_INBOUND",
				"-A OUTPUT -p tcp -j ISTIO_OUTPUT",
				"-A ISTIO_INBOUND -p tcp -m tcp --dport 15090 -j RETURN",
				"-A ISTIO_INBOUND -p tcp -m tcp --dport 15021 -j RETURN",
				"-A ISTIO_INBOUND -p tcp -m tcp --dport 4 -j RETURN",
				"-A ISTIO_INBOUND -p tcp -m tcp --dport 5 -j RETURN",
				"-A ISTIO_INBOUND -p tcp -m tcp --dport 6 -j RETURN",
				"-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT",
				"-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006",
				"-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN",
				"-A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN",
				// 10.96.0.2/24 and 10.96.0.3/24 are both 10.96.0.0/24; the exclude comes first.
				"-A ISTIO_OUTPUT -d 10.96.0.0/24 -j RETURN",
				"-A ISTIO_OUTPUT -d 127.0.0.0/24 -j ISTIO_REDIRECT",
				"-A ISTIO_OUTPUT -d 10.96.0.0/24 -j ISTIO_REDIRECT",
				"-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001",
			},
			notWant: []string{
				"-A ISTIO_OUTPUT -j ISTIO_REDIRECT", // only the listed CIDRs are captured
				"-A ISTIO_INBOUND -p tcp -m tcp --dport 15020 -j RETURN",
			},
		},
		{
			name: "traffic-annotations golden through the alias: inbound port list and outbound port excludes",
			args: append([]string{"iptables", "-n"}, trafficAnnotationsArgs...),
			want: []string{
				"-A ISTIO_INBOUND -p tcp -m tcp --dport 1 -j ISTIO_IN_REDIRECT",
				"-A ISTIO_INBOUND -p tcp -m tcp --dport 2 -j ISTIO_IN_REDIRECT",
				"-A ISTIO_INBOUND -p tcp -m tcp --dport 3 -j ISTIO_IN_REDIRECT",
				"-A ISTIO_OUTPUT -p tcp -m tcp --dport 7 -j RETURN",
				"-A ISTIO_OUTPUT -p tcp -m tcp --dport 8 -j RETURN",
				"-A ISTIO_OUTPUT -p tcp -m tcp --dport 9 -j RETURN",
				"-A ISTIO_OUTPUT -d 10.96.0.0/24 -j RETURN",
				"-A ISTIO_OUTPUT -d 127.0.0.0/24 -j ISTIO_REDIRECT",
			},
			notWant: []string{
				"-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT", // -b lists ports: -d does not apply
				"-A ISTIO_INBOUND -p tcp -m tcp --dport 15090 -j RETURN",
			},
		},
		{
			name: "hello golden with an empty -x, dual-stack",
			args: append([]string{"istio-iptables", "--dry-run", "--dual-stack"}, helloArgs...),
			want: []string{
				"# IPv4: iptables-restore --noflush",
				"-A ISTIO_OUTPUT -s 127.0.0.6/32 -o lo -j RETURN",
				"-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -o lo -p tcp -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT",
				"-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN",
				"-A ISTIO_OUTPUT -o lo -j RETURN",
				"-A ISTIO_OUTPUT -j ISTIO_REDIRECT",
				"# IPv6: ip6tables-restore --noflush",
				"-A ISTIO_OUTPUT -s ::6/128 -o lo -j RETURN",
				"-A ISTIO_OUTPUT ! -d ::1/128 -o lo -p tcp -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT",
			},
			notWant: []string{"-A ISTIO_OUTPUT -d  -j RETURN"},
		},
		{
			name: "MySQL excluded by CIDR",
			args: []string{"istio-iptables", "--dry-run", "-i", "*", "-x", "10.0.0.12/32", "-b", "*"},
			want: []string{
				"-A ISTIO_OUTPUT -d 10.0.0.12/32 -j RETURN",
				"-A ISTIO_OUTPUT -j ISTIO_REDIRECT",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, _, err := runRoot(t, tt.args...)
			if err != nil {
				t.Fatalf("injector %s: %v", strings.Join(tt.args, " "), err)
			}
			last := -1
			for _, rule := range tt.want {
				i := ruleIndex(t, out, rule)
				if i >= 0 && i < last {
					t.Errorf("rule %q comes before the rule listed above it", rule)
				}
				last = max(last, i)
			}
			for _, rule := range tt.notWant {
				if strings.Contains(out, rule+"\n") {
					t.Errorf("dry-run output has rule %q", rule)
				}
			}
			if t.Failed() {
				t.Logf("output:\n%s", out)
			}
		})
	}
}

// failingExec fails the test if the command tries to touch the system.
type failingExec struct{ t *testing.T }

func (f failingExec) Run(_ context.Context, _ []byte, name string, args ...string) ([]byte, error) {
	f.t.Errorf("ran %s %s, want nothing run", name, strings.Join(args, " "))
	return nil, nil
}

func TestIptablesInvalidFlags(t *testing.T) {
	tests := []struct {
		name   string
		args   []string
		wantIn []string
	}{
		{"bad CIDR", []string{"-x", "10.0.0.300/32"}, []string{"-x/--istio-service-exclude-cidr", "10.0.0.300/32"}},
		{"bad port", []string{"-d", "15090,http"}, []string{"-d/--istio-local-exclude-ports", "15090,http"}},
		{"port out of range", []string{"-p", "65536"}, []string{"-p/--envoy-port", "65536"}},
		{"unknown mode", []string{"-m", "NAT"}, []string{"-m/--istio-inbound-interception-mode", "NAT"}},
		{"positional argument", []string{"extra"}, []string{"unknown command"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := newIptablesCmdWith(iptablesDeps{
				exec:       failingExec{t},
				podHasIPv6: func() (bool, error) { t.Error("probed the pod's addresses"); return false, nil },
			})
			cmd.SilenceUsage, cmd.SilenceErrors = true, true // as under the root command
			var out, errOut bytes.Buffer
			cmd.SetOut(&out)
			cmd.SetErr(&errOut)
			cmd.SetArgs(append(append([]string{}, helloArgs...), tt.args...))
			err := cmd.ExecuteContext(t.Context())
			if err == nil {
				t.Fatal("want an error")
			}
			for _, s := range tt.wantIn {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not name %q", err, s)
				}
			}
			if out.Len() != 0 {
				t.Errorf("wrote rules despite the error:\n%s", out.String())
			}
		})
	}
}

func TestIptablesApplyUsesBothFamilies(t *testing.T) {
	var calls []string
	ex := recordingExec(func(name string, args []string) { calls = append(calls, name+" "+strings.Join(args, " ")) })
	cmd := newIptablesCmdWith(iptablesDeps{exec: ex, podHasIPv6: func() (bool, error) { return true, nil }})
	var errOut bytes.Buffer
	cmd.SetErr(&errOut)
	cmd.SetArgs(helloArgs)
	if err := cmd.ExecuteContext(t.Context()); err != nil {
		t.Fatalf("istio-iptables: %v\n%s", err, errOut.String())
	}
	want := "iptables-save \niptables-restore --noflush --wait=10\nip6tables-save \nip6tables-restore --noflush --wait=10"
	if got := strings.Join(calls, "\n"); got != want {
		t.Errorf("commands run:\n%s\nwant:\n%s", got, want)
	}
	if !strings.Contains(errOut.String(), "applied traffic capture rules") {
		t.Errorf("log %q does not report the applied rules", errOut.String())
	}
}

type recordingExec func(name string, args []string)

func (r recordingExec) Run(_ context.Context, _ []byte, name string, args ...string) ([]byte, error) {
	r(name, args)
	return nil, nil
}
