package config

import (
	"encoding/json"
	"fmt"
	"time"

	"sigs.k8s.io/yaml"
)

// MeshConfig is the part of Istio's MeshConfig that injection reads.
type MeshConfig struct {
	// TrustDomain is the SPIFFE trust domain passed to the proxy.
	TrustDomain string `json:"trustDomain,omitempty"`
	// DefaultConfig is the mesh-wide proxy configuration; pods override it
	// with the proxy.istio.io/config annotation.
	DefaultConfig ProxyConfig `json:"defaultConfig,omitempty"`
	// InboundTrafficPolicy's mode LOCALHOST sends inbound traffic to the
	// app on localhost (Istio before 1.10); the agent's rewritten probes
	// then do so too (REWRITE_PROBE_LEGACY_LOCALHOST_DESTINATION).
	InboundTrafficPolicy *InboundTrafficPolicy `json:"inboundTrafficPolicy,omitempty"`

	// Other MeshConfig fields are accepted so that an existing Istio mesh
	// config loads unchanged; injection does not read them.
	AccessLogFile                  json.RawMessage `json:"accessLogFile,omitempty"`
	AccessLogEncoding              json.RawMessage `json:"accessLogEncoding,omitempty"`
	AccessLogFormat                json.RawMessage `json:"accessLogFormat,omitempty"`
	EnableTracing                  json.RawMessage `json:"enableTracing,omitempty"`
	EnablePrometheusMerge          *bool           `json:"enablePrometheusMerge,omitempty"`
	RootNamespace                  json.RawMessage `json:"rootNamespace,omitempty"`
	OutboundTrafficPolicy          json.RawMessage `json:"outboundTrafficPolicy,omitempty"`
	ExtensionProviders             json.RawMessage `json:"extensionProviders,omitempty"`
	DefaultProviders               json.RawMessage `json:"defaultProviders,omitempty"`
	TrustDomainAliases             json.RawMessage `json:"trustDomainAliases,omitempty"`
	EnableAutoMtls                 json.RawMessage `json:"enableAutoMtls,omitempty"`
	LocalityLbSetting              json.RawMessage `json:"localityLbSetting,omitempty"`
	DNSRefreshRate                 json.RawMessage `json:"dnsRefreshRate,omitempty"`
	ConnectTimeout                 json.RawMessage `json:"connectTimeout,omitempty"`
	IngressClass                   json.RawMessage `json:"ingressClass,omitempty"`
	IngressService                 json.RawMessage `json:"ingressService,omitempty"`
	IngressControllerMode          json.RawMessage `json:"ingressControllerMode,omitempty"`
	IngressSelector                json.RawMessage `json:"ingressSelector,omitempty"`
	DefaultServiceExportTo         json.RawMessage `json:"defaultServiceExportTo,omitempty"`
	DefaultVirtualServiceExportTo  json.RawMessage `json:"defaultVirtualServiceExportTo,omitempty"`
	DefaultDestinationRuleExportTo json.RawMessage `json:"defaultDestinationRuleExportTo,omitempty"`
	ServiceSettings                json.RawMessage `json:"serviceSettings,omitempty"`
	CA                             json.RawMessage `json:"ca,omitempty"`
	CACertificates                 json.RawMessage `json:"caCertificates,omitempty"`
	DiscoverySelectors             json.RawMessage `json:"discoverySelectors,omitempty"`
	PathNormalization              json.RawMessage `json:"pathNormalization,omitempty"`
	MeshMTLS                       json.RawMessage `json:"meshMTLS,omitempty"`
	TLSDefaults                    json.RawMessage `json:"tlsDefaults,omitempty"`
	ProtocolDetectionTimeout       json.RawMessage `json:"protocolDetectionTimeout,omitempty"`
	H2UpgradePolicy                json.RawMessage `json:"h2UpgradePolicy,omitempty"`
	InboundClusterStatName         json.RawMessage `json:"inboundClusterStatName,omitempty"`
	OutboundClusterStatName        json.RawMessage `json:"outboundClusterStatName,omitempty"`
	VerifyCertificateAtClient      json.RawMessage `json:"verifyCertificateAtClient,omitempty"`
	ThriftConfig                   json.RawMessage `json:"thriftConfig,omitempty"`
	TCPKeepalive                   json.RawMessage `json:"tcpKeepalive,omitempty"`
	ServiceScopeConfigs            json.RawMessage `json:"serviceScopeConfigs,omitempty"`
}

// InboundTrafficPolicy is MeshConfig.inboundTrafficPolicy.
type InboundTrafficPolicy struct {
	// Mode is PASSTHROUGH (the default) or LOCALHOST.
	Mode string `json:"mode,omitempty"`
}

// ProxyConfig is Istio's ProxyConfig: the mesh's defaultConfig and the
// per-pod proxy.istio.io/config annotation. Fields injection reads are typed;
// the rest are carried as raw JSON so that they are still validated as known
// names and passed to the proxy.
type ProxyConfig struct {
	DiscoveryAddress                string            `json:"discoveryAddress,omitempty"`
	DrainDuration                   *Duration         `json:"drainDuration,omitempty"`
	TerminationDrainDuration        *Duration         `json:"terminationDrainDuration,omitempty"`
	ParentShutdownDuration          *Duration         `json:"parentShutdownDuration,omitempty"`
	Concurrency                     *int32            `json:"concurrency,omitempty"`
	HoldApplicationUntilProxyStarts *bool             `json:"holdApplicationUntilProxyStarts,omitempty"`
	InterceptionMode                string            `json:"interceptionMode,omitempty"`
	ProxyMetadata                   map[string]string `json:"proxyMetadata,omitempty"`
	StatusPort                      *int32            `json:"statusPort,omitempty"`
	ProxyAdminPort                  *int32            `json:"proxyAdminPort,omitempty"`
	Image                           *ProxyImage       `json:"image,omitempty"`

	ConfigPath                 json.RawMessage `json:"configPath,omitempty"`
	BinaryPath                 json.RawMessage `json:"binaryPath,omitempty"`
	ServiceCluster             json.RawMessage `json:"serviceCluster,omitempty"`
	DiscoveryRefreshDelay      json.RawMessage `json:"discoveryRefreshDelay,omitempty"`
	ZipkinAddress              json.RawMessage `json:"zipkinAddress,omitempty"`
	StatsdUDPAddress           json.RawMessage `json:"statsdUdpAddress,omitempty"`
	EnvoyMetricsServiceAddress json.RawMessage `json:"envoyMetricsServiceAddress,omitempty"`
	AvailabilityZone           json.RawMessage `json:"availabilityZone,omitempty"`
	ControlPlaneAuthPolicy     json.RawMessage `json:"controlPlaneAuthPolicy,omitempty"`
	CustomConfigFile           json.RawMessage `json:"customConfigFile,omitempty"`
	StatNameLength             json.RawMessage `json:"statNameLength,omitempty"`
	ProxyBootstrapTemplatePath json.RawMessage `json:"proxyBootstrapTemplatePath,omitempty"`
	Tracing                    json.RawMessage `json:"tracing,omitempty"`
	SDS                        json.RawMessage `json:"sds,omitempty"`
	EnvoyAccessLogService      json.RawMessage `json:"envoyAccessLogService,omitempty"`
	EnvoyMetricsService        json.RawMessage `json:"envoyMetricsService,omitempty"`
	RuntimeValues              json.RawMessage `json:"runtimeValues,omitempty"`
	ExtraStatTags              json.RawMessage `json:"extraStatTags,omitempty"`
	GatewayTopology            json.RawMessage `json:"gatewayTopology,omitempty"`
	MeshID                     json.RawMessage `json:"meshId,omitempty"`
	ReadinessProbe             json.RawMessage `json:"readinessProbe,omitempty"`
	ProxyStatsMatcher          json.RawMessage `json:"proxyStatsMatcher,omitempty"`
	CACertificatesPem          json.RawMessage `json:"caCertificatesPem,omitempty"`
	PrivateKeyProvider         json.RawMessage `json:"privateKeyProvider,omitempty"`
	ProxyHeaders               json.RawMessage `json:"proxyHeaders,omitempty"`
	FileFlushInterval          json.RawMessage `json:"fileFlushInterval,omitempty"`
	FileFlushMinSizeKb         json.RawMessage `json:"fileFlushMinSizeKb,omitempty"`
	TracingServiceName         json.RawMessage `json:"tracingServiceName,omitempty"`
}

// ProxyImage selects the proxy image variant (for example "distroless").
type ProxyImage struct {
	ImageType string `json:"imageType,omitempty"`
}

// Duration is a time.Duration written as Go duration text ("23s") in JSON
// and YAML, as protobuf's Duration is.
type Duration struct{ time.Duration }

// MarshalJSON writes the duration as text.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// UnmarshalJSON reads a duration such as "23s" or "1m30s".
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string such as \"5s\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("invalid duration %q: %w", s, err)
	}
	if v < 0 {
		return fmt.Errorf("invalid duration %q: must not be negative", s)
	}
	d.Duration = v
	return nil
}

// ParseProxyConfig decodes a ProxyConfig from YAML or JSON, refusing unknown
// fields and fields of the wrong type.
func ParseProxyConfig(data []byte) (ProxyConfig, error) {
	var pc ProxyConfig
	if err := yaml.UnmarshalStrict(data, &pc); err != nil {
		return ProxyConfig{}, err
	}
	if err := pc.Validate(); err != nil {
		return ProxyConfig{}, err
	}
	return pc, nil
}

// Validate checks the typed fields' values.
func (pc *ProxyConfig) Validate() error {
	switch pc.InterceptionMode {
	case "", "REDIRECT", "TPROXY", "NONE":
	default:
		return fmt.Errorf("interceptionMode %q is not one of REDIRECT, TPROXY, NONE", pc.InterceptionMode)
	}
	if pc.Concurrency != nil && *pc.Concurrency < 0 {
		return fmt.Errorf("concurrency %d must not be negative", *pc.Concurrency)
	}
	for name, p := range map[string]*int32{"statusPort": pc.StatusPort, "proxyAdminPort": pc.ProxyAdminPort} {
		if p != nil && (*p < 0 || *p > 65535) {
			return fmt.Errorf("%s %d is not a port (0-65535)", name, *p)
		}
	}
	return nil
}

// ParseMeshConfig decodes a MeshConfig from YAML, refusing unknown fields.
func ParseMeshConfig(data []byte) (MeshConfig, error) {
	var mc MeshConfig
	if err := yaml.UnmarshalStrict(data, &mc); err != nil {
		return MeshConfig{}, err
	}
	if err := mc.DefaultConfig.Validate(); err != nil {
		return MeshConfig{}, fmt.Errorf("defaultConfig: %w", err)
	}
	if p := mc.InboundTrafficPolicy; p != nil {
		switch p.Mode {
		case "", "PASSTHROUGH", "LOCALHOST":
		default:
			return MeshConfig{}, fmt.Errorf("inboundTrafficPolicy.mode %q is not one of PASSTHROUGH, LOCALHOST", p.Mode)
		}
	}
	return mc, nil
}

// MergeProxyConfig returns base with every field set in override replacing
// the base's value, as Istio merges proxy.istio.io/config over the mesh
// default (proxyMetadata is merged key by key).
func MergeProxyConfig(base, override ProxyConfig) (ProxyConfig, error) {
	b, err := json.Marshal(base)
	if err != nil {
		return ProxyConfig{}, err
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return ProxyConfig{}, err
	}
	o, err := json.Marshal(override)
	if err != nil {
		return ProxyConfig{}, err
	}
	var om map[string]any
	if err := json.Unmarshal(o, &om); err != nil {
		return ProxyConfig{}, err
	}
	for k, v := range om {
		if k == "proxyMetadata" {
			if bm, ok := m[k].(map[string]any); ok {
				for mk, mv := range v.(map[string]any) {
					bm[mk] = mv
				}
				continue
			}
		}
		m[k] = v
	}
	merged, err := json.Marshal(m)
	if err != nil {
		return ProxyConfig{}, err
	}
	var out ProxyConfig
	if err := json.Unmarshal(merged, &out); err != nil {
		return ProxyConfig{}, err
	}
	return out, nil
}
