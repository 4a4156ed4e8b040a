package config

import (
	"fmt"
	"strings"

	"sigs.k8s.io/yaml"
)

// Set records a --set override such as values.global.proxy.statusPort=0 or
// meshConfig.defaultConfig.holdApplicationUntilProxyStarts=true. The value
// is read as a YAML scalar (numbers and booleans are typed). Overrides are
// applied after the values and mesh files.
func (s *Sources) Set(expr string) error {
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
		if s.valueSets == nil {
			s.valueSets = map[string]any{}
		}
		setPath(s.valueSets, keys, v)
	case "meshConfig", "mesh":
		if s.meshSets == nil {
			s.meshSets = map[string]any{}
		}
		setPath(s.meshSets, keys, v)
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
