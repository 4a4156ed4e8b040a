// Command mkimage writes a single-layer container image as an OCI image layout
// tarball, without a registry or a container build tool. The result imports
// with `ctr -n k8s.io images import FILE` (or `docker load`, `podman load`).
//
//	mkimage -name localhost/remora/injector:test -o injector.tar \
//	  -entrypoint /usr/local/bin/injector -cmd serve -user 65532:65532 \
//	  -bin /usr/sbin/iptables-restore -bin '/usr/lib/x86_64-linux-gnu/xtables/*.so' \
//	  bin/injector:/usr/local/bin/injector:0755
//
// Arguments are files to copy, SRC:DST[:MODE] (MODE in octal; SRC's mode when
// omitted). -bin adds a host program at its own path together with the shared
// libraries ldd lists for it, recreating every symbolic link on the way (so
// /usr/sbin/iptables -> /etc/alternatives/iptables -> /usr/sbin/iptables-nft ->
// xtables-nft-multi resolves in the image as on the host). -path does the same
// without the libraries, -link adds a symbolic link DST=TARGET and -dir a
// directory. -bin and -path accept shell globs.
//
// It uses only the standard library (and ldd for -bin), so it builds anywhere
// Go does; see internal/ociimage for the library the e2e tests use.
package main

import (
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/remora-mesh/remora/internal/ociimage"
)

// list collects a repeatable flag.
type list []string

func (l *list) String() string     { return strings.Join(*l, " ") }
func (l *list) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fl := flag.NewFlagSet("mkimage", flag.ContinueOnError)
	name := fl.String("name", "", "image reference, e.g. localhost/remora/testapp:test (required)")
	out := fl.String("o", "", "output tarball (required)")
	entrypoint := fl.String("entrypoint", "", "entrypoint, comma-separated")
	cmd := fl.String("cmd", "", "default command (arguments to the entrypoint), comma-separated")
	user := fl.String("user", "", "UID[:GID] the image runs as")
	workdir := fl.String("workdir", "", "working directory")
	var env, labels, bins, paths, links, dirs list
	fl.Var(&env, "env", "KEY=VALUE environment variable (repeatable)")
	fl.Var(&labels, "label", "KEY=VALUE image label (repeatable)")
	fl.Var(&bins, "bin", "host program or shared object (glob), added at its own path with its ldd libraries (repeatable)")
	fl.Var(&paths, "path", "host file (glob), added at its own path, symbolic links kept (repeatable)")
	fl.Var(&links, "link", "DST=TARGET symbolic link (repeatable)")
	fl.Var(&dirs, "dir", "directory to create (repeatable)")
	fl.Usage = func() {
		_, _ = fmt.Fprintln(fl.Output(), "usage: mkimage -name REF -o FILE [flags] [SRC:DST[:MODE]...]")
		fl.PrintDefaults()
	}
	if err := fl.Parse(args); err != nil {
		return err
	}
	if *name == "" || *out == "" {
		fl.Usage()
		return fmt.Errorf("-name and -o are required")
	}

	im := ociimage.New(*name)
	im.Entrypoint = split(*entrypoint)
	im.Cmd = split(*cmd)
	im.User = *user
	im.WorkingDir = *workdir
	im.Env = env
	for _, l := range labels {
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			return fmt.Errorf("-label %q: want KEY=VALUE", l)
		}
		if im.Labels == nil {
			im.Labels = map[string]string{}
		}
		im.Labels[k] = v
	}
	for _, d := range dirs {
		if err := im.AddDir(d, 0o755); err != nil {
			return err
		}
	}
	for _, l := range links {
		dst, target, ok := strings.Cut(l, "=")
		if !ok {
			return fmt.Errorf("-link %q: want DST=TARGET", l)
		}
		if err := im.AddSymlink(dst, target); err != nil {
			return err
		}
	}
	if err := eachGlob(paths, func(p string) error { _, err := im.AddHostPath(p); return err }); err != nil {
		return err
	}
	if err := eachGlob(bins, im.AddHostBinary); err != nil {
		return err
	}
	for _, a := range fl.Args() {
		src, dst, mode, err := parseFileArg(a)
		if err != nil {
			return err
		}
		if err := im.AddFile(src, dst, mode); err != nil {
			return err
		}
	}
	if err := ociimage.WriteFile(*out, im); err != nil {
		return err
	}
	fmt.Printf("%s -> %s\n", *name, *out)
	return nil
}

func split(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

func eachGlob(patterns []string, f func(string) error) error {
	for _, pat := range patterns {
		matches, err := filepath.Glob(pat)
		if err != nil {
			return err
		}
		if len(matches) == 0 {
			return fmt.Errorf("%s: no such file", pat)
		}
		for _, m := range matches {
			if err := f(m); err != nil {
				return err
			}
		}
	}
	return nil
}

// parseFileArg parses SRC:DST[:MODE].
func parseFileArg(a string) (src, dst string, mode fs.FileMode, err error) {
	parts := strings.Split(a, ":")
	if len(parts) < 2 || len(parts) > 3 || parts[0] == "" || parts[1] == "" {
		return "", "", 0, fmt.Errorf("file argument %q: want SRC:DST[:MODE]", a)
	}
	if len(parts) == 3 {
		m, err := strconv.ParseUint(parts[2], 8, 32)
		if err != nil {
			return "", "", 0, fmt.Errorf("file argument %q: mode: %w", a, err)
		}
		mode = fs.FileMode(m)
	}
	return parts[0], parts[1], mode, nil
}
