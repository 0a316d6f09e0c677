# Shared by the scripts of this folder (sourced): the one-node mesh they run meshd on
# (egress listener 29402 to an upstream service on 127.0.0.1:29400) and HAProxy's
# equivalent (127.0.0.1:29403 to the same upstream).

# write_mesh DIR [UPSTREAM_PROTOCOL]: DIR/mesh.yaml; the upstream's listener protocol is
# http unless given (grpc, http2).
write_mesh() {
  cat > "$1/mesh.yaml" <<YAML
mesh: {meshName: bench, spec: {egressFilter: {type: DROP_ALL}}}
virtualNodes:
  - virtualNodeName: client
    spec:
      listeners: [{portMapping: {port: 18080, protocol: http}}]
      serviceDiscovery: {static: {endpoints: ["127.0.0.1:18080"]}}
      backends: [{virtualService: {virtualServiceName: upstream.bench.local}}]
  - virtualNodeName: upstream
    spec:
      listeners: [{portMapping: {port: 29400, protocol: ${2:-http}}}]
      serviceDiscovery: {static: {endpoints: ["127.0.0.1:29400"]}}
virtualServices:
  - virtualServiceName: upstream.bench.local
    spec: {provider: {virtualNode: {virtualNodeName: upstream}}}
YAML
}

# write_haproxy DIR BIND_OPTIONS SERVER_OPTIONS: DIR/haproxy.cfg, one thread, keep-alive
# both sides; "proto h2" as BIND_OPTIONS for h2c clients, as SERVER_OPTIONS for an h2c
# upstream.
write_haproxy() {
  cat > "$1/haproxy.cfg" <<CFG
global
    nbthread 1
    maxconn 4096
defaults
    mode http
    option http-keep-alive
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 30s
    http-reuse always
frontend bench
    bind 127.0.0.1:29403 $2
    default_backend upstream
backend upstream
    server up 127.0.0.1:29400 $3
CFG
}
