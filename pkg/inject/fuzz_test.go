package inject

import (
	"slices"
	"strings"
	"testing"

	"github.com/remora-mesh/remora/pkg/config"

	"github.com/remora-mesh/remora/internal/testenv"
)

func FuzzParsePortList(f *testing.F) {
	for _, s := range []string{"", "*", "80", "80,443", "80,,x", " 1 , 65535 ", "0", "65536", "-1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out, err := ParsePortList(s, true)
		if err != nil {
			return
		}
		// A normalised list parses to itself.
		again, err := ParsePortList(out, true)
		if err != nil || again != out {
			t.Fatalf("ParsePortList(%q)=%q does not round-trip: %q %v", s, out, again, err)
		}
	})
}

func FuzzParseCIDRList(f *testing.F) {
	for _, s := range []string{"", "*", "10.0.0.0/8", "10.0.0.1", "fd00::/8,10.0.0.0/33", "::1", "1.2.3.4/32,,"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out, err := ParseCIDRList(s, true)
		if err != nil {
			return
		}
		again, err := ParseCIDRList(out, true)
		if err != nil || again != out {
			t.Fatalf("ParseCIDRList(%q)=%q does not round-trip: %q %v", s, out, again, err)
		}
	})
}

// FuzzAnnotations sets one annotation the engine reads to an arbitrary
// value: the engine either injects or refuses with an *AnnotationError that
// names that annotation; it never panics or returns another error.
func FuzzAnnotations(f *testing.F) {
	keys := []string{
		AnnotationIncludeOutboundCIDRs, AnnotationExcludeOutboundCIDRs, AnnotationIncludeInboundPorts,
		AnnotationExcludeInboundPorts, AnnotationIncludeOutboundPorts, AnnotationExcludeOutboundPorts,
		AnnotationExcludeInterfaces, AnnotationRerouteVirtualIfaces, AnnotationInterceptionMode,
		AnnotationStatusPort, AnnotationProxyImage, AnnotationProxyCPU, AnnotationProxyMemory,
		AnnotationProxyCPULimit, AnnotationProxyMemoryLimit, AnnotationLogLevel, AnnotationComponentLogLevel,
		AnnotationAgentLogLevel, AnnotationReadinessDelay, AnnotationReadinessPeriod, AnnotationReadinessFailures,
		AnnotationScrapeTargets, AnnotationUserVolume, AnnotationUserVolumeMount, AnnotationBootstrapOverride,
		AnnotationNativeSidecar, AnnotationRewriteProbes, AnnotationMergeMetrics, AnnotationProxyConfig, AnnotationTemplates,
	}
	for i, k := range keys {
		f.Add(uint8(i), "")
		f.Add(uint8(i), "true")
		f.Add(uint8(i), "80,443")
		f.Add(uint8(i), `{"a":{"emptyDir":{}}}`)
		_ = k
	}
	cfgs := map[bool]*config.Config{true: config.MustDefault(), false: testenv.DefaultConfig(false)}
	f.Fuzz(func(t *testing.T, idx uint8, value string) {
		key := keys[int(idx)%len(keys)]
		res, err := Inject(Request{Pod: testPod(map[string]string{key: value}), Config: cfgs[idx%2 == 0]})
		if err == nil {
			if !res.Injected {
				t.Fatalf("no error and not injected: %v", res.Reason)
			}
			return
		}
		if !IsRefused(err) {
			t.Fatalf("%s=%q: error is neither an *AnnotationError nor a *PodError: %v", key, value, err)
		}
	})
}

// FuzzParseServiceRefs: what parses names valid Services, spelled back it
// parses to the same refs, and their record parses back too.
func FuzzParseServiceRefs(f *testing.F) {
	for _, s := range []string{"", "mysql.db", "postgres", " a.b , c ", "a.b.c", "A.b", "a,,b", "1a.b", "a.", ".b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		refs, err := ParseServiceRefs(s, "ns")
		if err != nil {
			return
		}
		names := make([]string, len(refs))
		services := make([]ExcludedService, len(refs))
		for i, r := range refs {
			names[i] = r.String()
			services[i] = ExcludedService{Ref: r}
		}
		again, err := ParseServiceRefs(strings.Join(names, ","), "other")
		if err != nil || !slices.Equal(again, refs) {
			t.Fatalf("ParseServiceRefs(%q)=%v does not round-trip: %v %v", s, refs, again, err)
		}
		rec := FormatExcludedServices(services)
		back, err := ParseExcludedServices(rec)
		if err != nil || FormatExcludedServices(back) != rec {
			t.Fatalf("record %q does not parse back: %v %v", rec, back, err)
		}
	})
}
