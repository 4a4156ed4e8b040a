package chart_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	yamlv3 "go.yaml.in/yaml/v3"
	"sigs.k8s.io/yaml"
)

var update = flag.Bool("update", false, "regenerate the values table in charts/remora/README.md")

const (
	tableBegin = "<!-- BEGIN VALUES TABLE -->"
	tableEnd   = "<!-- END VALUES TABLE -->"
)

// valueDoc is one key of a values file.
type valueDoc struct {
	path    string
	comment string
	node    *yamlv3.Node
}

// walkValues returns every key of a values file, depth first, with the comment lines right above it.
func walkValues(t *testing.T, file string) []valueDoc {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var doc yamlv3.Node
	if err := yamlv3.Unmarshal(data, &doc); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	var out []valueDoc
	var walk func(prefix string, n *yamlv3.Node)
	walk = func(prefix string, n *yamlv3.Node) {
		if n.Kind != yamlv3.MappingNode {
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			path := k.Value
			if prefix != "" {
				path = prefix + "." + k.Value
			}
			out = append(out, valueDoc{path: path, comment: lastCommentBlock(k.HeadComment), node: v})
			walk(path, v)
		}
	}
	if len(doc.Content) == 1 {
		walk("", doc.Content[0])
	}
	return out
}

// lastCommentBlock returns the comment paragraph directly above a key (file headers separated by
// a blank line are not part of it), without the leading "#".
func lastCommentBlock(head string) string {
	paragraphs := strings.Split(head, "\n\n")
	last := paragraphs[len(paragraphs)-1]
	var lines []string
	for _, l := range strings.Split(last, "\n") {
		l = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(l), "#"))
		if l != "" {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines, " ")
}

func TestEveryValueIsDocumented(t *testing.T) {
	for _, f := range []string{"values.yaml", "values-ha.yaml"} {
		t.Run(f, func(t *testing.T) {
			docs := walkValues(t, filepath.Join(chartDir(t), f))
			if len(docs) == 0 {
				t.Fatal("no keys found")
			}
			for _, d := range docs {
				if d.comment == "" {
					t.Errorf("%s: key %s has no comment above it", f, d.path)
				}
			}
		})
	}
}

// schemaNode is the part of values.schema.json the table needs.
type schemaNode struct {
	Ref        string                 `json:"$ref"`
	Type       any                    `json:"type"`
	Enum       []any                  `json:"enum"`
	OneOf      []*schemaNode          `json:"oneOf"`
	Properties map[string]*schemaNode `json:"properties"`
	Defs       map[string]*schemaNode `json:"definitions"`
	// AdditionalProperties is false, or the schema of a map's values.
	AdditionalProperties json.RawMessage `json:"additionalProperties"`
}

// mapValues is the schema of a map's values, or nil.
func (s *schemaNode) mapValues() *schemaNode {
	if len(s.AdditionalProperties) == 0 || s.AdditionalProperties[0] != '{' {
		return nil
	}
	v := &schemaNode{}
	if err := json.Unmarshal(s.AdditionalProperties, v); err != nil {
		return nil
	}
	return v
}

// freeForm reports an object whose content the chart does not define (a Kubernetes type such as
// a securityContext): the table shows it as one value.
func (s *schemaNode) freeForm() bool {
	return s != nil && s.Type == "object" && len(s.Properties) == 0 && len(s.AdditionalProperties) == 0
}

func loadSchema(t *testing.T) *schemaNode {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(chartDir(t), "values.schema.json"))
	if err != nil {
		t.Fatal(err)
	}
	s := &schemaNode{}
	if err := json.Unmarshal(data, s); err != nil {
		t.Fatalf("values.schema.json: %v", err)
	}
	return s
}

func (s *schemaNode) resolve(root *schemaNode) *schemaNode {
	for s != nil && s.Ref != "" {
		s = root.Defs[strings.TrimPrefix(s.Ref, "#/definitions/")]
	}
	return s
}

// lookup finds the schema of a dotted values path, or nil.
func (s *schemaNode) lookup(root *schemaNode, path string) *schemaNode {
	cur := s.resolve(root)
	for _, p := range strings.Split(path, ".") {
		if cur == nil {
			return nil
		}
		next, ok := cur.Properties[p]
		if !ok {
			next = cur.mapValues()
		}
		cur = next.resolve(root)
	}
	return cur
}

func (s *schemaNode) typeName(root *schemaNode) string {
	s = s.resolve(root)
	if s == nil {
		return ""
	}
	var types []string
	switch v := s.Type.(type) {
	case string:
		types = append(types, v)
	case []any:
		for _, x := range v {
			types = append(types, fmt.Sprint(x))
		}
	}
	for _, o := range s.OneOf {
		if n := o.typeName(root); n != "" && !slices.Contains(types, n) {
			types = append(types, n)
		}
	}
	name := strings.Join(types, " or ")
	if len(s.Enum) > 0 {
		var vals []string
		for _, e := range s.Enum {
			if str, ok := e.(string); ok {
				if str == "" {
					str = `""`
				}
				vals = append(vals, str)
			}
		}
		name += ": " + strings.Join(vals, ", ")
	}
	return name
}

// valuesTable renders the README table of every settable value (leaves, empty maps and lists).
func valuesTable(t *testing.T) string {
	t.Helper()
	schema := loadSchema(t)
	var b strings.Builder
	b.WriteString("| key | type | default | description |\n| --- | --- | --- | --- |\n")
	skipUnder := ""
	for _, d := range walkValues(t, filepath.Join(chartDir(t), "values.yaml")) {
		if skipUnder != "" && strings.HasPrefix(d.path, skipUnder) {
			continue
		}
		node := schema.lookup(schema, d.path)
		if node.freeForm() {
			skipUnder = d.path + "."
		} else if d.node.Kind == yamlv3.MappingNode && len(d.node.Content) > 0 {
			continue
		}
		var v any
		if err := d.node.Decode(&v); err != nil {
			t.Fatalf("%s: %v", d.path, err)
		}
		def, err := json.Marshal(v)
		if err != nil {
			t.Fatalf("%s: %v", d.path, err)
		}
		typ := node.typeName(schema)
		if typ == "" {
			t.Errorf("values.schema.json has no type for %s", d.path)
		}
		esc := func(s string) string { return strings.ReplaceAll(s, "|", `\|`) }
		fmt.Fprintf(&b, "| `%s` | %s | `%s` | %s |\n", d.path, esc(typ), esc(string(def)), esc(d.comment))
	}
	return b.String()
}

func TestReadmeValuesTable(t *testing.T) {
	path := filepath.Join(chartDir(t), "README.md")
	readme, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	begin := bytes.Index(readme, []byte(tableBegin))
	end := bytes.Index(readme, []byte(tableEnd))
	if begin < 0 || end < begin {
		t.Fatalf("README.md lacks the %s ... %s markers", tableBegin, tableEnd)
	}
	want := tableBegin + "\n" + valuesTable(t) + tableEnd
	got := string(readme[begin : end+len(tableEnd)])
	if got == want {
		return
	}
	if *update {
		out := string(readme[:begin]) + want + string(readme[end+len(tableEnd):])
		if err := os.WriteFile(path, []byte(out), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Log("updated the values table in charts/remora/README.md")
		return
	}
	t.Errorf("the values table in charts/remora/README.md is stale: run go test ./test/chart -run TestReadmeValuesTable -update")
}

// TestIstioValuesMatchInjectorDefaults keeps the chart's Istio sections in step with the injector's
// embedded defaults (pkg/config/default/values.yaml): the same defaults for shared keys, and every
// key the injector knows settable through the chart.
func TestIstioValuesMatchInjectorDefaults(t *testing.T) {
	readYAML := func(path string) map[string]any {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := yaml.Unmarshal(data, &m); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		return m
	}
	embeddedPath := filepath.Join(repoRoot(t), "pkg", "config", "default", "values.yaml")
	if _, err := os.Stat(embeddedPath); err != nil {
		t.Skipf("no embedded defaults at %s", embeddedPath)
	}
	embedded := readYAML(embeddedPath)
	chart := readYAML(filepath.Join(chartDir(t), "values.yaml"))
	// Keys the chart sets through its own values instead (a flag overrides the file).
	chartOwned := map[string]string{"global.nativeSidecars": "nativeSidecars (--native-sidecars)"}

	var compare func(path string, e, c any)
	compare = func(path string, e, c any) {
		em, eIsMap := e.(map[string]any)
		cm, cIsMap := c.(map[string]any)
		if eIsMap && len(em) > 0 {
			if !cIsMap {
				t.Errorf("%s: the injector has keys under it, the chart has %v", path, c)
				return
			}
			for k, ev := range em {
				if why, ok := chartOwned[path+"."+k]; ok {
					t.Logf("%s.%s: set through %s", path, k, why)
					continue
				}
				cv, ok := cm[k]
				if !ok {
					t.Errorf("%s.%s: known to the injector but not settable through the chart (add it to values.yaml and values.schema.json)", path, k)
					continue
				}
				compare(path+"."+k, ev, cv)
			}
			return
		}
		if path == "meshConfig" {
			return
		}
		if !reflect.DeepEqual(e, c) {
			t.Errorf("%s: chart default %v differs from the injector's %v", path, c, e)
		}
	}
	for _, section := range []string{"global", "sidecarInjectorWebhook", "pilot", "istio_cni", "meshConfig", "revision"} {
		e, ok := embedded[section]
		if !ok {
			continue
		}
		compare(section, e, chart[section])
	}
}
