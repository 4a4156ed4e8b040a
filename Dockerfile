# syntax=docker/dockerfile:1
#
# Remora's single image: `injector serve` (the admission webhook, the default
# command) and `injector istio-iptables` (the traffic-capture init container).
#
#   docker build -t remora/injector:dev --build-arg VERSION=$(git describe --tags --always) .
#
# Runtime security:
#   * serve runs as the non-root USER 65532 set below; the chart adds
#     runAsNonRoot, readOnlyRootFilesystem, drop ALL and seccomp RuntimeDefault.
#   * The istio-init container runs `injector istio-iptables ...` as root
#     (runAsUser 0, runAsNonRoot false) with only NET_ADMIN and NET_RAW added,
#     ALL others dropped and allowPrivilegeEscalation false, inside the pod's
#     network namespace. iptables-restore needs a writable /run for its
#     xtables lock, so that container keeps readOnlyRootFilesystem false, as in
#     Istio's injected pods.

ARG GO_VERSION=1.26.8
ARG DEBIAN_RELEASE=bookworm

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION}-${DEBIAN_RELEASE} AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG TARGETOS
ARG TARGETARCH
ARG VERSION=v0.1.0-dev
ARG REVISION=unknown
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=${TARGETOS} GOARCH=${TARGETARCH} \
    go build -trimpath \
      -ldflags="-s -w -X github.com/remora-mesh/remora/pkg/version.Version=${VERSION} -X github.com/remora-mesh/remora/pkg/version.Revision=${REVISION}" \
      -o /out/injector ./cmd/injector

FROM debian:${DEBIAN_RELEASE}-slim
# iptables provides iptables-restore/-save and ip6tables-restore/-save for
# istio-iptables; iproute2 provides ip, for TPROXY's policy routing.
# IPTABLES_BACKEND picks the kernel interface: nft (Debian's default, for
# nodes with nf_tables) or legacy (for nodes whose own rules use x_tables).
ARG IPTABLES_BACKEND=nft
RUN apt-get update \
 && apt-get install -y --no-install-recommends iptables iproute2 \
 && rm -rf /var/lib/apt/lists/* \
 && update-alternatives --set iptables /usr/sbin/iptables-${IPTABLES_BACKEND} \
 && update-alternatives --set ip6tables /usr/sbin/ip6tables-${IPTABLES_BACKEND}
COPY --from=build /out/injector /usr/local/bin/injector
ARG VERSION=v0.1.0-dev
LABEL org.opencontainers.image.title="remora-injector" \
      org.opencontainers.image.description="Istio-compatible sidecar injector and traffic-capture init program" \
      org.opencontainers.image.source="https://github.com/remora-mesh/remora" \
      org.opencontainers.image.version="${VERSION}"
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/injector"]
CMD ["serve"]
