// Package config holds meshd's configuration model: the App Mesh resource objects
// (mesh, virtual nodes, virtual services, virtual routers, routes, virtual gateways,
// gateway routes) with their API field names unchanged, plus a few extensions that
// are marked as such in their doc comments and in docs/config-reference.md.
//
// The model is plain data. Parse turns bytes into a *Config (strictly: an unknown
// field is an error naming its path and line), Validate reports every semantic error
// with its field path, and the router / proxy packages compile a validated Config
// into immutable runtime values. Nothing in this package is mutated after Parse
// returns; callers share *Config values freely across goroutines.
package config

import "time"

// Config is one whole mesh as meshd reads it from a file or the control endpoint.
// Each list holds resource objects exactly as `aws appmesh describe-*` prints them
// (the inner object, e.g. the value of "virtualNode"), or as written for
// `create-* --cli-input-json`.
type Config struct {
	Mesh            Mesh             `json:"mesh"`
	VirtualNodes    []VirtualNode    `json:"virtualNodes,omitempty"`
	VirtualServices []VirtualService `json:"virtualServices,omitempty"`
	VirtualRouters  []VirtualRouter  `json:"virtualRouters,omitempty"`
	Routes          []Route          `json:"routes,omitempty"`
	VirtualGateways []VirtualGateway `json:"virtualGateways,omitempty"`
	GatewayRoutes   []GatewayRoute   `json:"gatewayRoutes,omitempty"`

	// origins says where each resource of a merged input was written (Parse of
	// describe-* outputs, streams, directories), so Validate's errors name it; nil for
	// meshd's own one-document layout, whose paths are already the user's.
	origins *origins
}

// ResourceMeta holds the fields App Mesh prints around every resource's spec. They are
// accepted so describe-* output pastes in unchanged, and otherwise ignored.
type ResourceMeta struct {
	MeshName      string `json:"meshName,omitempty"`
	MeshOwner     string `json:"meshOwner,omitempty"`
	ResourceOwner string `json:"resourceOwner,omitempty"`
	Arn           string `json:"arn,omitempty"`
	Metadata      any    `json:"metadata,omitempty"`
	Status        any    `json:"status,omitempty"`
}

// Mesh is the mesh resource.
type Mesh struct {
	MeshName string   `json:"meshName"`
	Spec     MeshSpec `json:"spec"`
	ResourceMeta
}

type MeshSpec struct {
	// EgressFilter decides what happens to egress traffic that matches no backend.
	// Zero value: DROP_ALL (App Mesh's default).
	EgressFilter     *EgressFilter         `json:"egressFilter,omitempty"`
	ServiceDiscovery *MeshServiceDiscovery `json:"serviceDiscovery,omitempty"`
}

type EgressFilter struct {
	Type string `json:"type"` // ALLOW_ALL | DROP_ALL
}

type MeshServiceDiscovery struct {
	IPPreference string `json:"ipPreference,omitempty"` // IPv6_PREFERRED | IPv4_PREFERRED | IPv4_ONLY | IPv6_ONLY
	// DNSResolvers is a meshd extension: the DNS servers ("ip" or "ip:port") that resolve
	// service discovery names instead of /etc/resolv.conf's. meshd run --dns-resolver
	// overrides it.
	DNSResolvers []string `json:"dnsResolvers,omitempty"`
}

const (
	EgressAllowAll = "ALLOW_ALL"
	EgressDropAll  = "DROP_ALL"
)

// Duration is App Mesh's {unit, value} duration. Unit is "ms" or "s".
type Duration struct {
	Unit  string `json:"unit"`
	Value int64  `json:"value"`
}

// D converts d to a time.Duration; a nil d is 0 (meaning "not set").
func (d *Duration) D() time.Duration {
	if d == nil {
		return 0
	}
	switch d.Unit {
	case "s":
		return time.Duration(d.Value) * time.Second
	default: // "ms"; Validate rejects every other unit
		return time.Duration(d.Value) * time.Millisecond
	}
}

// ---------------------------------------------------------------------------
// Virtual nodes

type VirtualNode struct {
	VirtualNodeName string          `json:"virtualNodeName"`
	Spec            VirtualNodeSpec `json:"spec"`
	ResourceMeta
}

type VirtualNodeSpec struct {
	Listeners        []Listener        `json:"listeners,omitempty"`
	ServiceDiscovery *ServiceDiscovery `json:"serviceDiscovery,omitempty"`
	Backends         []Backend         `json:"backends,omitempty"`
	BackendDefaults  *BackendDefaults  `json:"backendDefaults,omitempty"`
	Logging          *Logging          `json:"logging,omitempty"`

	// LoadBalancing is a meshd extension: how requests to this node's endpoints are
	// spread. Nil means least-request with power of two choices.
	LoadBalancing *LoadBalancing `json:"loadBalancing,omitempty"`
}

// LoadBalancing (extension). See loadbalancing.go for Hash and SlowStart.
type LoadBalancing struct {
	// Policy: LEAST_REQUEST (default), ROUND_ROBIN, RANDOM, RING_HASH or MAGLEV.
	Policy string `json:"policy,omitempty"`
	// Hash is what RING_HASH and MAGLEV hash (required by them, refused otherwise).
	Hash *LBHash `json:"hash,omitempty"`
	// SlowStart ramps new and recovered endpoints (LEAST_REQUEST, ROUND_ROBIN, RANDOM).
	SlowStart *LBSlowStart `json:"slowStart,omitempty"`
}

const (
	LBLeastRequest = "LEAST_REQUEST"
	LBRoundRobin   = "ROUND_ROBIN"
	LBRandom       = "RANDOM"
	LBRingHash     = "RING_HASH"
	LBMaglev       = "MAGLEV"
)

type Listener struct {
	PortMapping      PortMapping       `json:"portMapping"`
	ConnectionPool   *ConnectionPool   `json:"connectionPool,omitempty"`
	HealthCheck      *HealthCheck      `json:"healthCheck,omitempty"`
	OutlierDetection *OutlierDetection `json:"outlierDetection,omitempty"`
	Timeout          *ListenerTimeout  `json:"timeout,omitempty"`
	TLS              *ListenerTLS      `json:"tls,omitempty"`

	// CircuitBreaker is a meshd extension: a breaker per cluster that targets this
	// listener. Nil means no breaker.
	CircuitBreaker *CircuitBreaker `json:"circuitBreaker,omitempty"`
	// RateLimit is a meshd extension: a local token bucket over every inbound request
	// on this listener (enforced by the node's own sidecar). Nil means no limit.
	RateLimit *RateLimit `json:"rateLimit,omitempty"`
	// RetryBudget is a meshd extension: the retry budget and max-retries limit of each
	// cluster (in every client sidecar) that targets this listener. Nil means the
	// defaults of docs/resilience.md.
	RetryBudget *RetryBudget `json:"retryBudget,omitempty"`
	// Authorization is a meshd extension: which callers, known by the verified identity
	// of their mTLS client certificate, may use this listener (enforced by the node's
	// own sidecar). Nil means every caller may, as in App Mesh; once set, a request (a
	// connection, on tcp listeners) that no rule allows is denied.
	Authorization *Authorization `json:"authorization,omitempty"`
}

// Authorization (extension) is a listener's allow list; docs/tls.md#authorization.
type Authorization struct {
	// Allow: a request is allowed when one rule allows it. At least one rule.
	Allow []AuthorizationRule `json:"allow"`
}

// AuthorizationRule allows its callers, narrowed by the conditions it sets (all of
// them must hold; a condition left out does not narrow).
type AuthorizationRule struct {
	// Callers: virtual node names of this mesh (the identity spiffe://<meshName>/<node>),
	// full SPIFFE IDs ("spiffe://..."), or "*" alone: any caller with a verified SPIFFE
	// ID. Required.
	Callers []string `json:"callers"`
	// Routes: the request must be one that the caller's sidecar routes by one of these
	// routes ("routeName", or "virtualRouterName/routeName" when the name alone is
	// ambiguous), each a route with a target on this listener. HTTP listeners only.
	Routes []string `json:"routes,omitempty"`
	// PathPrefixes: the request path (without the query) starts with one of these.
	// HTTP listeners only.
	PathPrefixes []string `json:"pathPrefixes,omitempty"`
	// Methods: the request method is one of these. HTTP listeners only.
	Methods []string `json:"methods,omitempty"`
}

// RetryBudget (extension) bounds the retries outstanding to one cluster at once, Envoy's
// retry_budget and max_retries threshold. Zero fields take the documented defaults.
type RetryBudget struct {
	// BudgetPercent: retries may be at most this share of the cluster's active requests;
	// (0, 100], default 20.
	BudgetPercent float64 `json:"budgetPercent,omitempty"`
	// MinRetryConcurrency: this many retries are always allowed at once, whatever the
	// active requests; ≥ 1, default 32 (Envoy's is 3; see
	// resilience.DefaultMinRetryConcurrency).
	MinRetryConcurrency int64 `json:"minRetryConcurrency,omitempty"`
	// MaxRetries: the absolute limit on outstanding retries, binding even when the
	// budget would allow more; ≥ 1, default 2147483647 (no limit).
	MaxRetries int64 `json:"maxRetries,omitempty"`
}

// CircuitBreaker (extension) configures the per-cluster breaker; see
// docs/resilience.md. Zero fields take the documented defaults.
type CircuitBreaker struct {
	// ConsecutiveFailures trips the breaker after this many failures in a row. Default 5
	// (used unless FailureRatio is set).
	ConsecutiveFailures int64 `json:"consecutiveFailures,omitempty"`
	// FailureRatio in (0, 1] trips it when failures/finished attempts within Interval
	// reach it, once MinRequests attempts finished.
	FailureRatio float64 `json:"failureRatio,omitempty"`
	// MinRequests: default 20 (ratio mode).
	MinRequests int64 `json:"minRequests,omitempty"`
	// Interval is the rolling window; ratio mode default 10 s, consecutive mode none.
	Interval *Duration `json:"interval,omitempty"`
	// OpenDuration: time open before probing; default 30 s.
	OpenDuration *Duration `json:"openDuration,omitempty"`
	// HalfOpenRequests: probes at once while half-open; default 1.
	HalfOpenRequests int64 `json:"halfOpenRequests,omitempty"`
}

// RateLimit (extension) is a local token bucket.
type RateLimit struct {
	// RequestsPerSecond is the sustained rate; > 0, fractions allowed. Required.
	RequestsPerSecond float64 `json:"requestsPerSecond"`
	// Burst: requests admitted at once; default ⌈RequestsPerSecond⌉.
	Burst int64 `json:"burst,omitempty"`
}

type PortMapping struct {
	Port     int    `json:"port"`
	Protocol string `json:"protocol"` // http | http2 | grpc | tcp
}

const (
	ProtoHTTP  = "http"
	ProtoHTTP2 = "http2"
	ProtoGRPC  = "grpc"
	ProtoTCP   = "tcp"
)

type ConnectionPool struct {
	HTTP  *HTTPConnectionPool  `json:"http,omitempty"`
	HTTP2 *HTTP2ConnectionPool `json:"http2,omitempty"`
	GRPC  *HTTP2ConnectionPool `json:"grpc,omitempty"`
	TCP   *TCPConnectionPool   `json:"tcp,omitempty"`
}

type HTTPConnectionPool struct {
	MaxConnections     int `json:"maxConnections"`
	MaxPendingRequests int `json:"maxPendingRequests,omitempty"`
}

type HTTP2ConnectionPool struct {
	MaxRequests int `json:"maxRequests"`
}

type TCPConnectionPool struct {
	MaxConnections int `json:"maxConnections"`
}

type HealthCheck struct {
	Protocol           string `json:"protocol"`
	Path               string `json:"path,omitempty"`
	Port               int    `json:"port,omitempty"`
	IntervalMillis     int64  `json:"intervalMillis"`
	TimeoutMillis      int64  `json:"timeoutMillis"`
	HealthyThreshold   int    `json:"healthyThreshold"`
	UnhealthyThreshold int    `json:"unhealthyThreshold"`

	// PanicThresholdPercent is a meshd extension: below this share of available
	// endpoints the cluster spreads over all of them. Nil means 50; 0 disables panic mode.
	PanicThresholdPercent *int `json:"panicThresholdPercent,omitempty"`
}

type OutlierDetection struct {
	MaxServerErrors      int64     `json:"maxServerErrors"`
	Interval             *Duration `json:"interval"`
	BaseEjectionDuration *Duration `json:"baseEjectionDuration"`
	MaxEjectionPercent   int       `json:"maxEjectionPercent"`
}

type ListenerTimeout struct {
	HTTP  *HTTPTimeout `json:"http,omitempty"`
	HTTP2 *HTTPTimeout `json:"http2,omitempty"`
	GRPC  *HTTPTimeout `json:"grpc,omitempty"`
	TCP   *TCPTimeout  `json:"tcp,omitempty"`
}

type HTTPTimeout struct {
	PerRequest *Duration `json:"perRequest,omitempty"`
	Idle       *Duration `json:"idle,omitempty"`
}

type TCPTimeout struct {
	Idle *Duration `json:"idle,omitempty"`
}

type ListenerTLS struct {
	Mode        string                 `json:"mode"` // STRICT | PERMISSIVE | DISABLED
	Certificate *ListenerTLSCert       `json:"certificate,omitempty"`
	Validation  *ListenerTLSValidation `json:"validation,omitempty"`
}

type ListenerTLSCert struct {
	ACM  *TLSACMCertificate  `json:"acm,omitempty"`
	File *TLSFileCertificate `json:"file,omitempty"`
	SDS  *TLSSDS             `json:"sds,omitempty"`
}

type TLSACMCertificate struct {
	CertificateArn string `json:"certificateArn"`
}

type TLSFileCertificate struct {
	CertificateChain string `json:"certificateChain"`
	PrivateKey       string `json:"privateKey"`
}

type TLSSDS struct {
	SecretName string `json:"secretName"`
}

type ListenerTLSValidation struct {
	Trust                   *TLSValidationTrust `json:"trust,omitempty"`
	SubjectAlternativeNames *SubjectAltNames    `json:"subjectAlternativeNames,omitempty"`
}

type TLSValidationTrust struct {
	ACM  *TLSACMTrust  `json:"acm,omitempty"`
	File *TLSFileTrust `json:"file,omitempty"`
	SDS  *TLSSDS       `json:"sds,omitempty"`
}

type TLSACMTrust struct {
	CertificateAuthorityArns []string `json:"certificateAuthorityArns"`
}

type TLSFileTrust struct {
	CertificateChain string `json:"certificateChain"`
}

type SubjectAltNames struct {
	Match SubjectAltNamesMatch `json:"match"`
}

type SubjectAltNamesMatch struct {
	Exact []string `json:"exact"`
}

type ServiceDiscovery struct {
	DNS         *DNSServiceDiscovery      `json:"dns,omitempty"`
	AWSCloudMap *CloudMapServiceDiscovery `json:"awsCloudMap,omitempty"`
	// Static is a meshd extension for hosts without DNS: a fixed endpoint list.
	Static *StaticServiceDiscovery `json:"static,omitempty"`
}

type DNSServiceDiscovery struct {
	Hostname     string `json:"hostname"`
	IPPreference string `json:"ipPreference,omitempty"`
	ResponseType string `json:"responseType,omitempty"` // LOADBALANCER | ENDPOINTS
	// RecordType is a meshd extension: A (A/AAAA records at the listener port, the
	// default) or SRV (each record's target at its own port and weight, as Cloud Map and
	// Consul DNS serve them).
	RecordType string `json:"recordType,omitempty"`
}

type CloudMapServiceDiscovery struct {
	NamespaceName string              `json:"namespaceName"`
	ServiceName   string              `json:"serviceName"`
	Attributes    []CloudMapAttribute `json:"attributes,omitempty"`
	IPPreference  string              `json:"ipPreference,omitempty"`
}

type CloudMapAttribute struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// StaticServiceDiscovery (extension).
type StaticServiceDiscovery struct {
	// Endpoints are "host:port" strings, or {address, weight} objects. An endpoint
	// without a port takes the listener's port.
	Endpoints []StaticEndpoint `json:"endpoints"`
}

// StaticEndpoint is written either as a plain "host:port" string (weight 1) or as
// {address: "host:port", weight: N}.
type StaticEndpoint struct {
	Address string `json:"address"`
	Weight  int    `json:"weight,omitempty"` // 0 means 1
}

type Backend struct {
	VirtualService *VirtualServiceBackend `json:"virtualService,omitempty"`
}

type VirtualServiceBackend struct {
	VirtualServiceName string        `json:"virtualServiceName"`
	ClientPolicy       *ClientPolicy `json:"clientPolicy,omitempty"`
}

type BackendDefaults struct {
	ClientPolicy *ClientPolicy `json:"clientPolicy,omitempty"`
}

type ClientPolicy struct {
	TLS *ClientTLS `json:"tls,omitempty"`
}

type ClientTLS struct {
	Enforce     *bool               `json:"enforce,omitempty"`
	Ports       []int               `json:"ports,omitempty"`
	Certificate *ClientTLSCert      `json:"certificate,omitempty"`
	Validation  ClientTLSValidation `json:"validation"`
}

type ClientTLSCert struct {
	File *TLSFileCertificate `json:"file,omitempty"`
	SDS  *TLSSDS             `json:"sds,omitempty"`
}

type ClientTLSValidation struct {
	Trust                   TLSValidationTrust `json:"trust"`
	SubjectAlternativeNames *SubjectAltNames   `json:"subjectAlternativeNames,omitempty"`
}

type Logging struct {
	AccessLog *AccessLog `json:"accessLog,omitempty"`
}

type AccessLog struct {
	File *FileAccessLog `json:"file,omitempty"`
}

type FileAccessLog struct {
	Path   string           `json:"path"`
	Format *AccessLogFormat `json:"format,omitempty"`
}

type AccessLogFormat struct {
	JSON []JSONFormatField `json:"json,omitempty"`
	Text string            `json:"text,omitempty"`
}

type JSONFormatField struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// ---------------------------------------------------------------------------
// Virtual services and routers

type VirtualService struct {
	VirtualServiceName string             `json:"virtualServiceName"`
	Spec               VirtualServiceSpec `json:"spec"`
	ResourceMeta
}

type VirtualServiceSpec struct {
	Provider *VirtualServiceProvider `json:"provider,omitempty"`
}

type VirtualServiceProvider struct {
	VirtualNode   *VirtualNodeRef   `json:"virtualNode,omitempty"`
	VirtualRouter *VirtualRouterRef `json:"virtualRouter,omitempty"`
}

type VirtualNodeRef struct {
	VirtualNodeName string `json:"virtualNodeName"`
}

type VirtualRouterRef struct {
	VirtualRouterName string `json:"virtualRouterName"`
}

type VirtualRouter struct {
	VirtualRouterName string            `json:"virtualRouterName"`
	Spec              VirtualRouterSpec `json:"spec"`
	ResourceMeta
}

type VirtualRouterSpec struct {
	Listeners []RouterListener `json:"listeners,omitempty"`
}

type RouterListener struct {
	PortMapping PortMapping `json:"portMapping"`
}

// ---------------------------------------------------------------------------
// Routes

type Route struct {
	RouteName         string    `json:"routeName"`
	VirtualRouterName string    `json:"virtualRouterName"`
	Spec              RouteSpec `json:"spec"`
	ResourceMeta
}

type RouteSpec struct {
	// Priority: 0 is highest, 1000 lowest. Routes without a priority are tried after
	// every route that has one, in file order.
	Priority   *int       `json:"priority,omitempty"`
	HTTPRoute  *HTTPRoute `json:"httpRoute,omitempty"`
	HTTP2Route *HTTPRoute `json:"http2Route,omitempty"`
	GRPCRoute  *GRPCRoute `json:"grpcRoute,omitempty"`
	TCPRoute   *TCPRoute  `json:"tcpRoute,omitempty"`
}

type HTTPRoute struct {
	Match       HTTPRouteMatch   `json:"match"`
	Action      RouteAction      `json:"action"`
	RetryPolicy *HTTPRetryPolicy `json:"retryPolicy,omitempty"`
	Timeout     *HTTPTimeout     `json:"timeout,omitempty"`
	// RateLimit is a meshd extension: a local token bucket over requests matching this
	// route. Nil means no limit.
	RateLimit *RateLimit `json:"rateLimit,omitempty"`
	// Headers is a meshd extension: request and response fields set, appended or
	// removed (headers.go).
	Headers *HeaderManipulation `json:"headers,omitempty"`
}

type HTTPRouteMatch struct {
	Prefix          string           `json:"prefix,omitempty"`
	Path            *PathMatch       `json:"path,omitempty"`
	Headers         []HeaderMatch    `json:"headers,omitempty"`
	Method          string           `json:"method,omitempty"`
	Scheme          string           `json:"scheme,omitempty"` // http | https
	QueryParameters []QueryParameter `json:"queryParameters,omitempty"`
	Port            int              `json:"port,omitempty"`
}

type PathMatch struct {
	Exact string `json:"exact,omitempty"`
	Regex string `json:"regex,omitempty"`
}

// HeaderMatch matches one request header (or, in a grpcRoute, one metadata entry).
type HeaderMatch struct {
	Name   string             `json:"name"`
	Invert bool               `json:"invert,omitempty"`
	Match  *HeaderMatchMethod `json:"match,omitempty"` // nil: the header is present
}

type HeaderMatchMethod struct {
	Exact  string      `json:"exact,omitempty"`
	Prefix string      `json:"prefix,omitempty"`
	Suffix string      `json:"suffix,omitempty"`
	Regex  string      `json:"regex,omitempty"`
	Range  *MatchRange `json:"range,omitempty"`
}

// MatchRange matches an integer header value v with Start <= v < End.
type MatchRange struct {
	Start int64 `json:"start"`
	End   int64 `json:"end"`
}

type QueryParameter struct {
	Name  string               `json:"name"`
	Match *QueryParameterMatch `json:"match,omitempty"` // nil: the parameter is present
}

type QueryParameterMatch struct {
	Exact string `json:"exact"`
}

type RouteAction struct {
	WeightedTargets []WeightedTarget `json:"weightedTargets"`
	// Mirror is a meshd extension (httpRoute, http2Route, grpcRoute): a share of the
	// route's requests copied to another virtual node, responses discarded
	// (config/mirror.go). Nil means none.
	Mirror *RouteMirror `json:"mirror,omitempty"`
}

type WeightedTarget struct {
	VirtualNode string `json:"virtualNode"`
	Weight      int    `json:"weight"`
	Port        int    `json:"port,omitempty"` // which of the node's listeners; 0: its only one
}

type HTTPRetryPolicy struct {
	MaxRetries      int64     `json:"maxRetries"`
	PerRetryTimeout *Duration `json:"perRetryTimeout"`
	HTTPRetryEvents []string  `json:"httpRetryEvents,omitempty"`
	TCPRetryEvents  []string  `json:"tcpRetryEvents,omitempty"`
}

type GRPCRoute struct {
	Match       GRPCRouteMatch   `json:"match"`
	Action      RouteAction      `json:"action"`
	RetryPolicy *GRPCRetryPolicy `json:"retryPolicy,omitempty"`
	Timeout     *HTTPTimeout     `json:"timeout,omitempty"`
	// RateLimit (extension): as on httpRoute.
	RateLimit *RateLimit `json:"rateLimit,omitempty"`
	// Headers (extension): as on httpRoute.
	Headers *HeaderManipulation `json:"headers,omitempty"`
}

type GRPCRouteMatch struct {
	ServiceName string        `json:"serviceName,omitempty"`
	MethodName  string        `json:"methodName,omitempty"`
	Metadata    []HeaderMatch `json:"metadata,omitempty"`
	Port        int           `json:"port,omitempty"`
}

type GRPCRetryPolicy struct {
	MaxRetries      int64     `json:"maxRetries"`
	PerRetryTimeout *Duration `json:"perRetryTimeout"`
	GRPCRetryEvents []string  `json:"grpcRetryEvents,omitempty"`
	HTTPRetryEvents []string  `json:"httpRetryEvents,omitempty"`
	TCPRetryEvents  []string  `json:"tcpRetryEvents,omitempty"`
}

type TCPRoute struct {
	Action  RouteAction    `json:"action"`
	Timeout *TCPTimeout    `json:"timeout,omitempty"`
	Match   *TCPRouteMatch `json:"match,omitempty"`
}

type TCPRouteMatch struct {
	Port int `json:"port,omitempty"`
}

// ---------------------------------------------------------------------------
// Virtual gateways and gateway routes (parsed and kept; served by the gateway work)

type VirtualGateway struct {
	VirtualGatewayName string             `json:"virtualGatewayName"`
	Spec               VirtualGatewaySpec `json:"spec"`
	ResourceMeta
}

type VirtualGatewaySpec struct {
	Listeners       []GatewayListener `json:"listeners"`
	BackendDefaults *BackendDefaults  `json:"backendDefaults,omitempty"`
	Logging         *Logging          `json:"logging,omitempty"`
}

type GatewayListener struct {
	PortMapping    PortMapping     `json:"portMapping"`
	ConnectionPool *ConnectionPool `json:"connectionPool,omitempty"`
	HealthCheck    *HealthCheck    `json:"healthCheck,omitempty"`
	TLS            *ListenerTLS    `json:"tls,omitempty"`
}

type GatewayRoute struct {
	GatewayRouteName   string           `json:"gatewayRouteName"`
	VirtualGatewayName string           `json:"virtualGatewayName"`
	Spec               GatewayRouteSpec `json:"spec"`
	ResourceMeta
}

type GatewayRouteSpec struct {
	Priority   *int              `json:"priority,omitempty"`
	HTTPRoute  *GatewayHTTPRoute `json:"httpRoute,omitempty"`
	HTTP2Route *GatewayHTTPRoute `json:"http2Route,omitempty"`
	GRPCRoute  *GatewayGRPCRoute `json:"grpcRoute,omitempty"`
}

type GatewayHTTPRoute struct {
	Match  GatewayHTTPRouteMatch  `json:"match"`
	Action GatewayHTTPRouteAction `json:"action"`
	// Headers (extension): as on httpRoute; the gateway route's rules apply to the
	// request before the target route's, and to the response after them.
	Headers *HeaderManipulation `json:"headers,omitempty"`
}

type GatewayHTTPRouteMatch struct {
	Prefix          string           `json:"prefix,omitempty"`
	Path            *PathMatch       `json:"path,omitempty"`
	Headers         []HeaderMatch    `json:"headers,omitempty"`
	Method          string           `json:"method,omitempty"`
	Hostname        *HostnameMatch   `json:"hostname,omitempty"`
	QueryParameters []QueryParameter `json:"queryParameters,omitempty"`
	Port            int              `json:"port,omitempty"`
}

type HostnameMatch struct {
	Exact  string `json:"exact,omitempty"`
	Suffix string `json:"suffix,omitempty"`
}

type GatewayHTTPRouteAction struct {
	Target  GatewayTarget       `json:"target"`
	Rewrite *GatewayHTTPRewrite `json:"rewrite,omitempty"`
}

type GatewayTarget struct {
	VirtualService VirtualServiceRef `json:"virtualService"`
	Port           int               `json:"port,omitempty"`
}

type VirtualServiceRef struct {
	VirtualServiceName string `json:"virtualServiceName"`
}

type GatewayHTTPRewrite struct {
	Prefix   *GatewayPrefixRewrite   `json:"prefix,omitempty"`
	Path     *GatewayPathRewrite     `json:"path,omitempty"`
	Hostname *GatewayHostnameRewrite `json:"hostname,omitempty"`
}

type GatewayPrefixRewrite struct {
	DefaultPrefix string `json:"defaultPrefix,omitempty"` // ENABLED | DISABLED
	Value         string `json:"value,omitempty"`
}

type GatewayPathRewrite struct {
	Exact string `json:"exact"`
}

type GatewayHostnameRewrite struct {
	DefaultTargetHostname string `json:"defaultTargetHostname"` // ENABLED | DISABLED
}

type GatewayGRPCRoute struct {
	Match  GatewayGRPCRouteMatch `json:"match"`
	Action GatewayGRPCAction     `json:"action"`
	// Headers (extension): as on GatewayHTTPRoute.
	Headers *HeaderManipulation `json:"headers,omitempty"`
}

type GatewayGRPCRouteMatch struct {
	ServiceName string         `json:"serviceName,omitempty"`
	Hostname    *HostnameMatch `json:"hostname,omitempty"`
	Metadata    []HeaderMatch  `json:"metadata,omitempty"`
	Port        int            `json:"port,omitempty"`
}

type GatewayGRPCAction struct {
	Target  GatewayTarget           `json:"target"`
	Rewrite *GatewayHostnameRewrite `json:"rewrite,omitempty"`
}
