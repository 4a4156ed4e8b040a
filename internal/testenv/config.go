package testenv

import "github.com/remora-mesh/remora/pkg/config"

// ServerVersion is an API server version with native sidecars (1.37) or without (1.28).
func ServerVersion(native bool) string {
	if native {
		return "v1.37.2"
	}
	return "v1.28.0"
}

// DefaultConfig is the embedded default configuration as serve loads it on an API server with or
// without native sidecars.
func DefaultConfig(native bool) *config.Config {
	return config.MustLoad(config.Sources{}, config.Overrides{ServerVersion: ServerVersion(native)})
}
