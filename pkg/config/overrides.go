package config

import (
	"fmt"
	"strings"

	utilversion "k8s.io/apimachinery/pkg/util/version"
	"sigs.k8s.io/yaml"
)

// DefaultRevision is the revision a configuration serves when its values
// and --revision name none, as in Istio.
const DefaultRevision = "default"

// Overrides are what the command line sets over the configuration's files:
// the one place where flags override a configuration. Load applies them
// before it validates and hashes, so that a flag and the same setting in the
// values give the same configuration and the same hash. Zero fields
// override nothing.
type Overrides struct {
	// Revision replaces the values' revision (--revision). "default" and
	// an empty revision are the same.
	Revision string
	// NativeSidecars replaces the values' global.nativeSidecars when true
	// or false (--native-sidecars); auto and "" leave the values' setting.
	NativeSidecars string
	// ServerVersion is the API server's version (such as v1.37.2), by
	// which auto is resolved: native sidecars from Kubernetes 1.29. Empty
	// means offline, where auto means native sidecars.
	ServerVersion string

	// valueSets and meshSets hold --set overrides (see Set).
	valueSets map[string]any
	meshSets  map[string]any
}

// nativeSidecarsMinVersion is the first Kubernetes version with native
// sidecars (init containers with restartPolicy Always) on by default.
var nativeSidecarsMinVersion = utilversion.MajorMinor(1, 29)

// NativeSidecarsSupported says whether an API server of this version (its
// gitVersion, such as v1.37.2) runs native sidecars by default.
func NativeSidecarsSupported(serverVersion string) (bool, error) {
	v, err := utilversion.ParseGeneric(serverVersion)
	if err != nil {
		return false, fmt.Errorf("parsing the API server's version %q: %w", serverVersion, err)
	}
	return v.AtLeast(nativeSidecarsMinVersion), nil
}

// resolveNativeSidecars says what a native sidecar switch (auto, true or
// false) means on an API server of serverVersion ("": offline).
func resolveNativeSidecars(value, serverVersion string) (bool, error) {
	switch value {
	case "true":
		return true, nil
	case "false":
		return false, nil
	case "", "auto":
		if serverVersion == "" {
			return true, nil
		}
		return NativeSidecarsSupported(serverVersion)
	}
	return false, fmt.Errorf("%q is not one of auto, true, false", value)
}

func (o *Overrides) validate() error {
	switch o.NativeSidecars {
	case "", "auto", "true", "false":
	default:
		return fmt.Errorf("--native-sidecars %q: want auto, true or false", o.NativeSidecars)
	}
	if o.ServerVersion != "" {
		if _, err := NativeSidecarsSupported(o.ServerVersion); err != nil {
			return err
		}
	}
	return nil
}

// applyTo writes --revision and --native-sidecars into the merged values,
// which templates then see as well.
func (o *Overrides) applyTo(values map[string]any) {
	if o.Revision != "" {
		current, _ := values["revision"].(string)
		if effectiveRevision(o.Revision) != effectiveRevision(current) {
			values["revision"] = o.Revision
		}
	}
	if o.NativeSidecars == "true" || o.NativeSidecars == "false" {
		global, ok := values["global"].(map[string]any)
		if !ok {
			global = map[string]any{}
			values["global"] = global
		}
		global["nativeSidecars"] = o.NativeSidecars
	}
}

// effectiveRevision maps the empty revision to DefaultRevision.
func effectiveRevision(rev string) string {
	if rev == "" {
		return DefaultRevision
	}
	return rev
}

// Set records a --set override such as values.global.proxy.statusPort=0 or
// meshConfig.defaultConfig.holdApplicationUntilProxyStarts=true. The value
// is read as a YAML scalar (numbers and booleans are typed). Overrides are
// applied after the values and mesh files.
func (o *Overrides) Set(expr string) error {
	path, value, ok := strings.Cut(expr, "=")
	if !ok || path == "" {
		return fmt.Errorf("--set %q: want PATH=VALUE, such as values.global.proxy.statusPort=0", expr)
	}
	var v any
	if err := yaml.Unmarshal([]byte(value), &v); err != nil || isContainer(v) {
		v = value
	}
	root, rest, _ := strings.Cut(path, ".")
	if rest == "" {
		return fmt.Errorf("--set %q: the path needs a prefix and a key, such as values.global.hub", expr)
	}
	keys := strings.Split(rest, ".")
	for _, k := range keys {
		if k == "" {
			return fmt.Errorf("--set %q: empty key in path", expr)
		}
	}
	switch root {
	case "values":
		if o.valueSets == nil {
			o.valueSets = map[string]any{}
		}
		setPath(o.valueSets, keys, v)
	case "meshConfig", "mesh":
		if o.meshSets == nil {
			o.meshSets = map[string]any{}
		}
		setPath(o.meshSets, keys, v)
	default:
		return fmt.Errorf("--set %q: the path must start with values or meshConfig", expr)
	}
	return nil
}

func isContainer(v any) bool {
	switch v.(type) {
	case map[string]any, []any:
		return true
	}
	return false
}

func setPath(m map[string]any, keys []string, v any) {
	for _, k := range keys[:len(keys)-1] {
		next, ok := m[k].(map[string]any)
		if !ok {
			next = map[string]any{}
			m[k] = next
		}
		m = next
	}
	m[keys[len(keys)-1]] = v
}
