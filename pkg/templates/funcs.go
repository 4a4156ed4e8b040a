package templates

import (
	"encoding/json"
	"fmt"
	"os"
	"path"
	"strconv"
	"strings"
	"text/template"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// FuncMap returns the functions templates may call. The names are the ones
// Istio's injection templates use, so their templates render here too.
func FuncMap() template.FuncMap {
	return template.FuncMap{
		"toJSON":         toJSON,
		"toJson":         toJSON,
		"fromJSON":       fromJSON,
		"toYaml":         toYAML,
		"indent":         indent,
		"annotation":     annotation,
		"isset":          isset,
		"valueOrDefault": valueOrDefault,
		"default":        defaultValue,
		"contains":       flippedContains,
		"toLower":        strings.ToLower,
		"strdict":        strdict,
		"omit":           omit,
		"env":            envOrDefault,
		"directory":      path.Dir,
		"quote":          strconv.Quote,
		"join":           func(sep string, l []string) string { return strings.Join(l, sep) },
		"split":          func(sep, s string) []string { return strings.Split(s, sep) },
		"replaceItem":    replaceItem,
		"withoutNamed":   withoutNamed,
		"moveNamed":      moveNamed,
	}
}

// moveNamed returns a list of named things with the item called name moved
// to just before the one called before (Istio's templates order some env
// vars differently from one another). The list is unchanged when either is
// missing.
func moveNamed(list any, name, before string) []any {
	items := withoutNamed(list)
	from, to := -1, -1
	for i, it := range items {
		switch it.(map[string]any)["name"] {
		case name:
			from = i
		case before:
			to = i
		}
	}
	if from < 0 || to < 0 || from == to {
		return items
	}
	it := items[from]
	items = append(items[:from], items[from+1:]...)
	if from < to {
		to--
	}
	return append(items[:to], append([]any{it}, items[to:]...)...)
}

// replaceItem returns list with every item equal to old replaced by new.
func replaceItem(list []string, old, new string) []string {
	out := make([]string, len(list))
	for i, s := range list {
		if s == old {
			s = new
		}
		out[i] = s
	}
	return out
}

// withoutNamed returns the items of a list of named things (volumes,
// mounts, containers, env vars) whose name is not one of names.
func withoutNamed(list any, names ...string) []any {
	b, err := json.Marshal(list)
	if err != nil {
		return nil
	}
	var items []map[string]any
	if err := json.Unmarshal(b, &items); err != nil {
		return nil
	}
	out := make([]any, 0, len(items))
	for _, it := range items {
		name, _ := it["name"].(string)
		drop := false
		for _, n := range names {
			drop = drop || name == n
		}
		if !drop {
			out = append(out, it)
		}
	}
	return out
}

func toJSON(v any) string {
	if v == nil {
		return "null"
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprintf("%q", err.Error())
	}
	return string(b)
}

func fromJSON(s string) any {
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		return nil
	}
	return v
}

func toYAML(v any) string {
	b, err := yaml.Marshal(v)
	if err != nil {
		return ""
	}
	return strings.TrimSuffix(string(b), "\n")
}

func indent(n int, s string) string {
	pad := strings.Repeat(" ", n)
	return pad + strings.ReplaceAll(s, "\n", "\n"+pad)
}

// annotation returns the pod annotation name, or def when it is not set.
func annotation(meta metav1.ObjectMeta, name string, def any) string {
	if v, ok := meta.Annotations[name]; ok {
		return v
	}
	return fmt.Sprint(def)
}

func isset(m map[string]string, key string) bool {
	_, ok := m[key]
	return ok
}

func isEmpty(v any) bool {
	switch t := v.(type) {
	case nil:
		return true
	case string:
		return t == ""
	case []any:
		return len(t) == 0
	case map[string]any:
		return len(t) == 0
	case bool:
		return !t
	}
	return false
}

func valueOrDefault(v any, def any) any {
	if isEmpty(v) {
		return def
	}
	return v
}

// defaultValue is sprig's argument order: default DEFAULT VALUE.
func defaultValue(def any, v any) any { return valueOrDefault(v, def) }

func flippedContains(sub, s string) bool { return strings.Contains(s, sub) }

func strdict(kv ...string) map[string]string {
	m := make(map[string]string, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

func omit(m map[string]string, keys ...string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	for _, k := range keys {
		delete(out, k)
	}
	return out
}

func envOrDefault(key, def string) string {
	if v, ok := os.LookupEnv(key); ok {
		return v
	}
	return def
}
