package guard

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/go-json-experiment/json/jsontext"

	"github.com/remora-mesh/remora/internal/testenv"
)

// BenchmarkStrictPass is the guard's one pass over the reference review
// (strict validation and the envelope), beside jsontext's validator alone,
// which the guard ran before it until it did both at once.
func BenchmarkStrictPass(b *testing.B) {
	body, err := os.ReadFile(filepath.Join("..", "..", testenv.ReviewFile))
	if err != nil {
		b.Fatal(err)
	}
	b.Run("readEnvelope", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := readEnvelope(body); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("IsValid", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if !jsontext.Value(body).IsValid() {
				b.Fatal("invalid")
			}
		}
	})
}
