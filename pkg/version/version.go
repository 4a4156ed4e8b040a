// Package version holds the build's version, stamped at link time.
package version

// Version is the Remora release, set with
// -ldflags "-X github.com/remora-mesh/remora/pkg/version.Version=v1.2.3".
var Version = "v0.1.0-dev"

// Revision is the git commit the binary was built from, set like Version.
var Revision = "unknown"
