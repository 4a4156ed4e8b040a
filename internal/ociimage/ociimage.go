// Package ociimage writes single-layer container images as OCI image layout
// tarballs, the format `ctr images import` (and `docker load`, `podman load`,
// `skopeo copy oci-archive:`) accepts, without a registry or a container
// build tool. It uses only the standard library.
//
// An Image is a set of files, directories and symbolic links plus the image
// config (entrypoint, command, user, environment). Host files can be added as
// they are or, for dynamically linked programs, together with every shared
// library ldd(1) lists for them. Symbolic links on the way to a host file,
// including the /etc/alternatives links Debian uses for iptables and the
// merged-/usr links (/lib -> usr/lib), are recreated in the image, so a path
// resolves in the image the same way it does on the host.
//
// The output is reproducible: entries are sorted, owned by root and dated at
// the Unix epoch, so the same inputs give the same digests.
package ociimage

import (
	"archive/tar"
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"
)

// Media types of the OCI image specification.
const (
	MediaTypeIndex    = "application/vnd.oci.image.index.v1+json"
	MediaTypeManifest = "application/vnd.oci.image.manifest.v1+json"
	MediaTypeConfig   = "application/vnd.oci.image.config.v1+json"
	MediaTypeLayer    = "application/vnd.oci.image.layer.v1.tar"
)

// Annotations on the index entry that name the image. containerd's importer
// reads the first; the OCI layout reference name is the second.
const (
	AnnotationContainerdName = "io.containerd.image.name"
	AnnotationRefName        = "org.opencontainers.image.ref.name"
)

// DefaultPath is the PATH every image gets unless Env sets one.
const DefaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

var epoch = time.Unix(0, 0).UTC()

type entryKind int

const (
	kindFile entryKind = iota
	kindDir
	kindSymlink
)

// entry is one path in the layer.
type entry struct {
	kind   entryKind
	mode   fs.FileMode
	src    string // host file to copy (kindFile), or ""
	data   []byte // contents when src is ""
	target string // link target (kindSymlink)
}

// Image is a single-layer image being assembled. The zero value is not usable;
// call New.
type Image struct {
	// Name is the full reference, e.g. localhost/remora/injector:test.
	Name string
	// Entrypoint and Cmd are the image's default command, as in a Dockerfile.
	Entrypoint []string
	Cmd        []string
	// Env holds KEY=VALUE pairs; DefaultPath is added when no PATH is set.
	Env []string
	// User is "UID[:GID]" (names need an /etc/passwd in the image).
	User string
	// WorkingDir is the default working directory.
	WorkingDir string
	// Labels are the image config labels.
	Labels map[string]string
	// OS and Architecture default to linux and the running architecture.
	OS, Architecture string

	entries map[string]*entry // by clean absolute path
}

// New returns an empty image with the given reference, holding only /tmp
// (mode 1777) so that programs that need a scratch directory find one.
func New(name string) *Image {
	im := &Image{Name: name, entries: map[string]*entry{}}
	im.entries["/tmp"] = &entry{kind: kindDir, mode: fs.ModeDir | fs.ModeSticky | 0o777}
	return im
}

func cleanAbs(p string) (string, error) {
	if p == "" {
		return "", errors.New("empty path")
	}
	c := path.Clean("/" + p)
	if c == "/" {
		return "", errors.New("the root directory cannot be an entry")
	}
	return c, nil
}

// put records e at p, making parent directories. It fails when p, or one of
// its parents, already holds something of another kind, or a different file.
func (im *Image) put(p string, e *entry) error {
	p, err := cleanAbs(p)
	if err != nil {
		return err
	}
	if err := im.parents(p); err != nil {
		return err
	}
	if old, ok := im.entries[p]; ok {
		switch {
		case old.kind != e.kind:
			return fmt.Errorf("%s: already in the image as another kind of entry", p)
		case e.kind == kindDir:
			return nil
		case e.kind == kindSymlink && old.target == e.target:
			return nil
		case e.kind == kindFile && e.src != "" && old.src == e.src && old.mode == e.mode:
			return nil
		default:
			return fmt.Errorf("%s: already in the image with other contents", p)
		}
	}
	im.entries[p] = e
	return nil
}

func (im *Image) parents(p string) error {
	for d := path.Dir(p); d != "/"; d = path.Dir(d) {
		old, ok := im.entries[d]
		if !ok {
			im.entries[d] = &entry{kind: kindDir, mode: fs.ModeDir | 0o755}
			continue
		}
		if old.kind != kindDir {
			return fmt.Errorf("%s: parent %s is not a directory in the image", p, d)
		}
	}
	return nil
}

// AddFile copies the host file src to dst. A zero mode keeps src's permission
// bits. src is read when the image is written.
func (im *Image) AddFile(src, dst string, mode fs.FileMode) error {
	st, err := os.Stat(src)
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%s: not a regular file", src)
	}
	if mode == 0 {
		mode = st.Mode().Perm()
	}
	return im.put(dst, &entry{kind: kindFile, src: src, mode: mode.Perm()})
}

// AddBytes writes data to dst with the given permission bits.
func (im *Image) AddBytes(dst string, data []byte, mode fs.FileMode) error {
	return im.put(dst, &entry{kind: kindFile, data: bytes.Clone(data), mode: mode.Perm()})
}

// AddDir makes the directory dst (and its parents).
func (im *Image) AddDir(dst string, mode fs.FileMode) error {
	return im.put(dst, &entry{kind: kindDir, mode: fs.ModeDir | mode.Perm()})
}

// AddSymlink makes dst a symbolic link to target (kept verbatim, relative or
// absolute).
func (im *Image) AddSymlink(dst, target string) error {
	if target == "" {
		return fmt.Errorf("%s: empty symlink target", dst)
	}
	return im.put(dst, &entry{kind: kindSymlink, target: target, mode: 0o777})
}

// AddHostPath adds the host path p at the same path in the image. Every
// symbolic link met while resolving p (in p itself or in a parent directory)
// is recreated as a link, and the file it finally names is copied, so the
// image resolves p exactly as the host does. It returns the resolved path.
func (im *Image) AddHostPath(p string) (string, error) {
	resolved, links, err := resolve(p)
	if err != nil {
		return "", err
	}
	for _, l := range links {
		if err := im.AddSymlink(l.path, l.target); err != nil {
			return "", err
		}
	}
	st, err := os.Stat(resolved)
	if err != nil {
		return "", err
	}
	if st.IsDir() {
		return resolved, im.AddDir(resolved, st.Mode().Perm())
	}
	return resolved, im.AddFile(resolved, resolved, 0)
}

// AddHostBinary adds the host program (or shared object) p with AddHostPath,
// and every shared library ldd lists for it, the dynamic loader included,
// each with AddHostPath. A static program adds no libraries.
func (im *Image) AddHostBinary(p string) error {
	resolved, err := im.AddHostPath(p)
	if err != nil {
		return err
	}
	libs, err := SharedLibraries(resolved)
	if err != nil {
		return err
	}
	for _, l := range libs {
		if _, err := im.AddHostPath(l); err != nil {
			return fmt.Errorf("library %s of %s: %w", l, p, err)
		}
	}
	return nil
}

// SharedLibraries returns the absolute paths ldd(1) prints for the program or
// shared object p: the libraries it loads and the dynamic loader. A static
// program has none. The virtual vDSO is skipped.
func SharedLibraries(p string) ([]string, error) {
	cmd := exec.Command("ldd", p) //nolint:gosec // G204: ldd of a file the caller adds
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	text := stdout.String() + stderr.String()
	if strings.Contains(text, "not a dynamic executable") || strings.Contains(text, "statically linked") {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("ldd %s: %w: %s", p, err, strings.TrimSpace(text))
	}
	var libs []string
	seen := map[string]bool{}
	sc := bufio.NewScanner(&stdout)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		// "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
		if _, after, ok := strings.Cut(line, "=>"); ok {
			line = strings.TrimSpace(after)
		}
		if strings.Contains(line, "not found") {
			return nil, fmt.Errorf("ldd %s: missing library: %s", p, sc.Text())
		}
		f := strings.Fields(line)
		if len(f) == 0 || !strings.HasPrefix(f[0], "/") || seen[f[0]] {
			continue
		}
		seen[f[0]] = true
		libs = append(libs, f[0])
	}
	return libs, sc.Err()
}

type link struct{ path, target string }

// resolve follows p component by component, like the kernel does, and
// returns the final symlink-free path and every link it went through.
func resolve(p string) (string, []link, error) {
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", nil, err
	}
	var links []link
	todo := strings.Split(strings.TrimPrefix(path.Clean(abs), "/"), "/")
	cur := "/"
	for hops := 0; len(todo) > 0; {
		name := todo[0]
		todo = todo[1:]
		switch name {
		case "", ".":
			continue
		case "..":
			cur = path.Dir(cur)
			continue
		}
		next := path.Join(cur, name)
		st, err := os.Lstat(next)
		if err != nil {
			return "", nil, err
		}
		if st.Mode()&fs.ModeSymlink == 0 {
			cur = next
			continue
		}
		if hops++; hops > 40 {
			return "", nil, fmt.Errorf("%s: too many levels of symbolic links", p)
		}
		target, err := os.Readlink(next)
		if err != nil {
			return "", nil, err
		}
		links = append(links, link{path: next, target: target})
		rest := strings.Split(strings.TrimPrefix(target, "/"), "/")
		if strings.HasPrefix(target, "/") {
			cur = "/"
		}
		todo = append(rest, todo...)
	}
	return cur, links, nil
}

// config is the OCI image configuration.
func (im *Image) config(diffID string) ([]byte, error) {
	env := append([]string(nil), im.Env...)
	hasPath := false
	for _, e := range env {
		hasPath = hasPath || strings.HasPrefix(e, "PATH=")
	}
	if !hasPath {
		env = append([]string{DefaultPath}, env...)
	}
	type imageConfig struct {
		User       string            `json:"User,omitempty"`
		Env        []string          `json:"Env,omitempty"`
		Entrypoint []string          `json:"Entrypoint,omitempty"`
		Cmd        []string          `json:"Cmd,omitempty"`
		WorkingDir string            `json:"WorkingDir,omitempty"`
		Labels     map[string]string `json:"Labels,omitempty"`
	}
	return json.Marshal(struct {
		Created      string      `json:"created"`
		Architecture string      `json:"architecture"`
		OS           string      `json:"os"`
		Config       imageConfig `json:"config"`
		RootFS       struct {
			Type    string   `json:"type"`
			DiffIDs []string `json:"diff_ids"`
		} `json:"rootfs"`
	}{
		Created:      epoch.Format(time.RFC3339),
		Architecture: im.arch(),
		OS:           im.os(),
		Config: imageConfig{User: im.User, Env: env, Entrypoint: im.Entrypoint, Cmd: im.Cmd,
			WorkingDir: im.WorkingDir, Labels: im.Labels},
		RootFS: struct {
			Type    string   `json:"type"`
			DiffIDs []string `json:"diff_ids"`
		}{Type: "layers", DiffIDs: []string{diffID}},
	})
}

func (im *Image) arch() string {
	if im.Architecture != "" {
		return im.Architecture
	}
	return runtime.GOARCH
}

func (im *Image) os() string {
	if im.OS != "" {
		return im.OS
	}
	return "linux"
}

// Layer returns the image's single layer: an uncompressed tar of every entry,
// sorted by path, owned by root, dated at the epoch.
func (im *Image) Layer() ([]byte, error) {
	paths := make([]string, 0, len(im.entries))
	for p := range im.entries {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, p := range paths {
		e := im.entries[p]
		h := &tar.Header{Name: strings.TrimPrefix(p, "/"), ModTime: epoch, Format: tar.FormatPAX,
			Mode: int64(e.mode.Perm())}
		if e.mode&fs.ModeSticky != 0 {
			h.Mode |= 0o1000
		}
		switch e.kind {
		case kindDir:
			h.Typeflag, h.Name = tar.TypeDir, h.Name+"/"
		case kindSymlink:
			h.Typeflag, h.Linkname = tar.TypeSymlink, e.target
		case kindFile:
			h.Typeflag = tar.TypeReg
			data := e.data
			if e.src != "" {
				b, err := os.ReadFile(e.src)
				if err != nil {
					return nil, err
				}
				data = b
			}
			h.Size = int64(len(data))
			if err := tw.WriteHeader(h); err != nil {
				return nil, err
			}
			if _, err := tw.Write(data); err != nil {
				return nil, err
			}
			continue
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Descriptor is an OCI content descriptor.
type Descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Platform    *Platform         `json:"platform,omitempty"`
}

// Platform is the platform of an index entry.
type Platform struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
}

type blob struct {
	digest string
	data   []byte
}

func newBlob(b []byte) blob {
	s := sha256.Sum256(b)
	return blob{digest: "sha256:" + hex.EncodeToString(s[:]), data: b}
}

// tag returns the tag of a reference: what follows the last ':' after the
// last '/', or "latest".
func tag(ref string) string {
	last := ref[strings.LastIndex(ref, "/")+1:]
	if _, t, ok := strings.Cut(last, ":"); ok && t != "" {
		return t
	}
	return "latest"
}

// WriteLayout writes one OCI image layout tarball holding every image, each
// named in index.json by its reference. One `ctr images import` imports them
// all.
func WriteLayout(w io.Writer, images ...*Image) error {
	if len(images) == 0 {
		return errors.New("no images")
	}
	var blobs []blob
	var manifests []Descriptor
	for _, im := range images {
		if im.Name == "" {
			return errors.New("image without a name")
		}
		layerData, err := im.Layer()
		if err != nil {
			return fmt.Errorf("%s: %w", im.Name, err)
		}
		layer := newBlob(layerData)
		cfgData, err := im.config(layer.digest)
		if err != nil {
			return err
		}
		cfg := newBlob(cfgData)
		manData, err := json.Marshal(struct {
			SchemaVersion int          `json:"schemaVersion"`
			MediaType     string       `json:"mediaType"`
			Config        Descriptor   `json:"config"`
			Layers        []Descriptor `json:"layers"`
		}{2, MediaTypeManifest,
			Descriptor{MediaType: MediaTypeConfig, Digest: cfg.digest, Size: int64(len(cfg.data))},
			[]Descriptor{{MediaType: MediaTypeLayer, Digest: layer.digest, Size: int64(len(layer.data))}}})
		if err != nil {
			return err
		}
		man := newBlob(manData)
		blobs = append(blobs, layer, cfg, man)
		manifests = append(manifests, Descriptor{MediaType: MediaTypeManifest, Digest: man.digest,
			Size: int64(len(man.data)), Platform: &Platform{Architecture: im.arch(), OS: im.os()},
			Annotations: map[string]string{AnnotationContainerdName: im.Name, AnnotationRefName: tag(im.Name)}})
	}
	index, err := json.Marshal(struct {
		SchemaVersion int          `json:"schemaVersion"`
		MediaType     string       `json:"mediaType"`
		Manifests     []Descriptor `json:"manifests"`
	}{2, MediaTypeIndex, manifests})
	if err != nil {
		return err
	}

	tw := tar.NewWriter(w)
	for _, d := range []string{"blobs/", "blobs/sha256/"} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: 0o755, ModTime: epoch}); err != nil {
			return err
		}
	}
	put := func(name string, b []byte) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Size: int64(len(b)), Mode: 0o644, ModTime: epoch}); err != nil {
			return err
		}
		_, err := tw.Write(b)
		return err
	}
	if err := put("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
		return err
	}
	if err := put("index.json", index); err != nil {
		return err
	}
	written := map[string]bool{}
	for _, b := range blobs {
		if written[b.digest] {
			continue
		}
		written[b.digest] = true
		if err := put("blobs/sha256/"+strings.TrimPrefix(b.digest, "sha256:"), b.data); err != nil {
			return err
		}
	}
	return tw.Close()
}

// WriteFile writes WriteLayout's tarball to the file at p.
func WriteFile(p string, images ...*Image) error {
	f, err := os.Create(p) //nolint:gosec // G304: the output the caller names
	if err != nil {
		return err
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	if err := WriteLayout(bw, images...); err != nil {
		_ = f.Close()
		return err
	}
	if err := bw.Flush(); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}
