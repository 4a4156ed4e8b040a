package templates

import (
	"bytes"
	"embed"
	"fmt"
	"io/fs"
	"path"
	"strings"
	"text/template"
)

//go:embed default/*.tmpl
var builtinFS embed.FS

// Suffix marks a template file; its base name is the template name.
const Suffix = ".tmpl"

// Builtin returns the text of the embedded default templates by name.
func Builtin() (map[string]string, error) {
	files, err := fs.Glob(builtinFS, "default/*"+Suffix)
	if err != nil {
		return nil, fmt.Errorf("listing the embedded templates: %w", err)
	}
	texts := make(map[string]string, len(files))
	for _, p := range files {
		b, err := builtinFS.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("reading the embedded template %s: %w", p, err)
		}
		texts[strings.TrimSuffix(path.Base(p), Suffix)] = string(b)
	}
	return texts, nil
}

// Parse parses a template's text as every template is parsed: with FuncMap,
// and a missing map key yielding the zero value, as in Istio.
func Parse(name, text string) (*template.Template, error) {
	t, err := template.New(name).Funcs(FuncMap()).Option("missingkey=zero").Parse(text)
	if err != nil {
		return nil, fmt.Errorf("template %q: %w", name, err)
	}
	return t, nil
}

// Execute renders a parsed template with data and returns its output.
func Execute(t *template.Template, data any) ([]byte, error) {
	var buf bytes.Buffer
	buf.Grow(8 << 10)
	if err := t.Execute(&buf, data); err != nil {
		return nil, fmt.Errorf("rendering template %q: %w", t.Name(), err)
	}
	return buf.Bytes(), nil
}
