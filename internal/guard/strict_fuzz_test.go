package guard

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-json-experiment/json/jsontext"

	"github.com/remora-mesh/remora/internal/testenv"
)

// FuzzStrictEnvelope: the guard validates a body in one pass, reading the
// envelope. Whatever that pass accepts must be one strict JSON object as
// jsontext.Value.IsValid judges it (UTF-8, no duplicate names at any depth,
// nothing after the value), so that no request escapes the strict check;
// and whatever it refuses must be refused for a reason checkJSON or the
// envelope can name.
func FuzzStrictEnvelope(f *testing.F) {
	review, err := os.ReadFile(filepath.Join("..", "..", testenv.ReviewFile))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(review)
	f.Add([]byte(strings.Replace(string(review), `"uid":`, `"uid":"x","uid":`, 1)))
	f.Add([]byte(strings.Replace(string(review), `"app":`, `"app":"x","app":`, 1)))
	f.Add(append(append([]byte{}, review...), " {}"...))
	f.Add([]byte("\xef\xbb\xbf{}"))
	f.Add([]byte(`{"request":{"object":{"a":"\xff"}}}`))
	f.Add([]byte(`{"a":1} `))
	f.Fuzz(func(t *testing.T, body []byte) {
		_, err := readEnvelope(body)
		valid := jsontext.Value(body).IsValid()
		if err == nil {
			if !valid {
				t.Fatalf("the one pass accepted a body that is not strict JSON: %q", body)
			}
			if trimmed := strings.TrimLeft(string(body), " \t\r\n"); trimmed == "" || trimmed[0] != '{' {
				t.Fatalf("the one pass accepted a body that is not a JSON object: %q", body)
			}
			return
		}
		if valid && checkJSON(body) != "" && strings.HasPrefix(strings.TrimLeft(string(body), " \t\r\n"), "{") {
			t.Fatalf("checkJSON refuses a valid JSON object: %q", body)
		}
		if !valid && checkJSON(body) == "" {
			t.Fatalf("invalid JSON %q refused by the one pass (%v) but not explained by checkJSON", body, err)
		}
	})
}
