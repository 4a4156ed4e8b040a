package inject

// The external tests' view of the internal tests' helpers.
var (
	// NativeConfig is nativeConfig.
	NativeConfig = nativeConfig
	// ServerVersion is serverVersion.
	ServerVersion = serverVersion
)
