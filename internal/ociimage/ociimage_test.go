package ociimage

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/remora-mesh/remora/internal/testenv"
)

// readTar returns the regular files and symlink targets of a tarball by name.
func readTar(t *testing.T, data []byte) (files map[string][]byte, links map[string]string, headers map[string]*tar.Header) {
	t.Helper()
	files, links, headers = map[string][]byte{}, map[string]string{}, map[string]*tar.Header{}
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files, links, headers
		}
		if err != nil {
			t.Fatal(err)
		}
		headers[h.Name] = h
		switch h.Typeflag {
		case tar.TypeReg:
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			files[h.Name] = b
		case tar.TypeSymlink:
			links[h.Name] = h.Linkname
		}
	}
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

func TestWriteLayoutIsAValidOCILayout(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "prog")
	if err := os.WriteFile(src, []byte("#!/bin/true\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	a := New("localhost/remora/a:test")
	a.Entrypoint = []string{"/usr/local/bin/prog"}
	a.User = "1337:1337"
	if err := a.AddFile(src, "/usr/local/bin/prog", 0); err != nil {
		t.Fatal(err)
	}
	if err := a.AddSymlink("/usr/bin/prog", "../local/bin/prog"); err != nil {
		t.Fatal(err)
	}
	b := New("localhost/remora/b:v2")
	if err := b.AddBytes("/etc/hello", []byte("hi\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	var buf bytes.Buffer
	if err := WriteLayout(&buf, a, b); err != nil {
		t.Fatal(err)
	}
	files, _, _ := readTar(t, buf.Bytes())
	if string(files["oci-layout"]) != `{"imageLayoutVersion":"1.0.0"}` {
		t.Errorf("oci-layout = %q", files["oci-layout"])
	}
	blob := func(d string) []byte {
		t.Helper()
		b, ok := files["blobs/sha256/"+strings.TrimPrefix(d, "sha256:")]
		if !ok {
			t.Fatalf("blob %s missing", d)
		}
		if sha(b) != d {
			t.Fatalf("blob %s has digest %s", d, sha(b))
		}
		return b
	}
	var index struct {
		Manifests []Descriptor `json:"manifests"`
	}
	if err := json.Unmarshal(files["index.json"], &index); err != nil {
		t.Fatal(err)
	}
	if len(index.Manifests) != 2 {
		t.Fatalf("index has %d manifests, want 2", len(index.Manifests))
	}
	for i, want := range []struct{ name, tag string }{{"localhost/remora/a:test", "test"}, {"localhost/remora/b:v2", "v2"}} {
		d := index.Manifests[i]
		if d.Annotations[AnnotationContainerdName] != want.name || d.Annotations[AnnotationRefName] != want.tag {
			t.Errorf("manifest %d annotations = %v", i, d.Annotations)
		}
		var man struct {
			Config Descriptor   `json:"config"`
			Layers []Descriptor `json:"layers"`
		}
		if err := json.Unmarshal(blob(d.Digest), &man); err != nil {
			t.Fatal(err)
		}
		var cfg struct {
			Config struct {
				User       string   `json:"User"`
				Env        []string `json:"Env"`
				Entrypoint []string `json:"Entrypoint"`
			} `json:"config"`
			RootFS struct {
				DiffIDs []string `json:"diff_ids"`
			} `json:"rootfs"`
		}
		if err := json.Unmarshal(blob(man.Config.Digest), &cfg); err != nil {
			t.Fatal(err)
		}
		if len(man.Layers) != 1 || cfg.RootFS.DiffIDs[0] != man.Layers[0].Digest {
			t.Errorf("manifest %d: layers %v, diff_ids %v", i, man.Layers, cfg.RootFS.DiffIDs)
		}
		if cfg.Config.Env[0] != DefaultPath {
			t.Errorf("env = %v, want the default PATH", cfg.Config.Env)
		}
		layerFiles, layerLinks, headers := readTar(t, blob(man.Layers[0].Digest))
		if headers["tmp/"] == nil || headers["tmp/"].Mode != 0o1777 {
			t.Errorf("image %d: /tmp missing or not 1777: %+v", i, headers["tmp/"])
		}
		if i == 0 {
			if cfg.Config.User != "1337:1337" || cfg.Config.Entrypoint[0] != "/usr/local/bin/prog" {
				t.Errorf("config = %+v", cfg.Config)
			}
			if string(layerFiles["usr/local/bin/prog"]) != "#!/bin/true\n" || headers["usr/local/bin/prog"].Mode != 0o755 {
				t.Errorf("prog: %q mode %o", layerFiles["usr/local/bin/prog"], headers["usr/local/bin/prog"].Mode)
			}
			if layerLinks["usr/bin/prog"] != "../local/bin/prog" {
				t.Errorf("links = %v", layerLinks)
			}
		} else if string(layerFiles["etc/hello"]) != "hi\n" || headers["etc/hello"].Mode != 0o600 {
			t.Errorf("etc/hello: %q mode %o", layerFiles["etc/hello"], headers["etc/hello"].Mode)
		}
	}

	// Reproducible: the same inputs give the same bytes.
	var again bytes.Buffer
	if err := WriteLayout(&again, a, b); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), again.Bytes()) {
		t.Error("two writes of the same images differ")
	}
}

// TestAddHostPathKeepsTheLinkChain builds the iptables shape in a temporary
// directory: a link to an alternatives link to a relative link to the real
// multi-call program, under a parent directory that is itself a link.
func TestAddHostPathKeepsTheLinkChain(t *testing.T) {
	root := t.TempDir()
	mk := func(p string) string { return filepath.Join(root, p) }
	for _, d := range []string{"usr/sbin", "etc/alternatives"} {
		if err := os.MkdirAll(mk(d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(mk("usr/sbin/xtables-nft-multi"), []byte("ELF"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, l := range [][2]string{
		{"sbin", "usr/sbin"},
		{"usr/sbin/iptables", mk("etc/alternatives/iptables")},
		{"etc/alternatives/iptables", mk("usr/sbin/iptables-nft")},
		{"usr/sbin/iptables-nft", "xtables-nft-multi"},
	} {
		if err := os.Symlink(l[1], mk(l[0])); err != nil {
			t.Fatal(err)
		}
	}

	im := New("localhost/t:t")
	resolved, err := im.AddHostPath(mk("sbin/iptables"))
	if err != nil {
		t.Fatal(err)
	}
	if resolved != mk("usr/sbin/xtables-nft-multi") {
		t.Errorf("resolved = %s", resolved)
	}
	layer, err := im.Layer()
	if err != nil {
		t.Fatal(err)
	}
	files, links, _ := readTar(t, layer)
	rel := func(p string) string { return strings.TrimPrefix(mk(p), "/") }
	want := map[string]string{
		rel("sbin"):                      "usr/sbin",
		rel("usr/sbin/iptables"):         mk("etc/alternatives/iptables"),
		rel("etc/alternatives/iptables"): mk("usr/sbin/iptables-nft"),
		rel("usr/sbin/iptables-nft"):     "xtables-nft-multi",
	}
	for k, v := range want {
		if links[k] != v {
			t.Errorf("link %s = %q, want %q", k, links[k], v)
		}
	}
	if string(files[rel("usr/sbin/xtables-nft-multi")]) != "ELF" {
		t.Errorf("program not copied; files: %v", files)
	}

	// A file under a path that is a link in the image is a conflict.
	if err := im.AddBytes(mk("sbin/other"), nil, 0o644); err == nil {
		t.Error("adding a file under a symlinked directory succeeded")
	}
}

func TestAddHostBinaryAddsLibraries(t *testing.T) {
	if _, err := exec.LookPath("ldd"); err != nil {
		testenv.SkipOrFail(t, "no ldd: %v", err)
	}
	prog, err := exec.LookPath("true")
	if err != nil {
		testenv.SkipOrFail(t, "no true(1): %v", err)
	}
	libs, err := SharedLibraries(prog)
	if err != nil {
		t.Fatal(err)
	}
	if len(libs) == 0 {
		testenv.Skip(t, prog+" is statically linked: no libraries to add")
	}
	im := New("localhost/t:t")
	if err := im.AddHostBinary(prog); err != nil {
		t.Fatal(err)
	}
	for _, l := range libs {
		resolved, _, err := resolve(l)
		if err != nil {
			t.Fatal(err)
		}
		if e := im.entries[resolved]; e == nil || e.kind != kindFile {
			t.Errorf("library %s (%s) not in the image", l, resolved)
		}
	}
}

func TestTag(t *testing.T) {
	for ref, want := range map[string]string{
		"localhost/remora/injector:test": "test",
		"localhost:5000/remora/pause":    "latest",
		"pause":                          "latest",
		"localhost:5000/pause:3.10":      "3.10",
	} {
		if got := tag(ref); got != want {
			t.Errorf("tag(%q) = %q, want %q", ref, got, want)
		}
	}
}
