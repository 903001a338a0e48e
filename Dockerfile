# etch in a container: etchd and etchctl built from this repository, on Debian slim.
#
#   docker build -t etch .
#   docker run -d --name etch -p 127.0.0.1:7379:7379/udp -v etch-data:/var/lib/etch etch
#   docker exec etch etchctl put greeting hello
#
# With no flags the node runs on its embedded defaults (a development CA and certificates
# under /var/lib/etch/certs, for localhost and 127.0.0.1). For a cluster, give each member its
# certificates (mounted read-only) and flags or ETCH_* variables, as for a member on a host:
#   docker run ... -v /etc/etch:/etc/etch:ro etch --name n1 \
#     --ca /etc/etch/ca.crt --cert /etc/etch/n1.crt --key /etc/etch/n1.key \
#     --initial-cluster n1=n1.internal:7380,n2=n2.internal:7380,n3=n3.internal:7380 \
#     --advertise-client n1.internal:7379 --listen-metrics 0.0.0.0:7381
# The health check runs etchctl with ETCHCTL_CACERT/_CERT/_KEY: point them at a client
# certificate of the cluster's CA when not on the embedded defaults.
# QUIC runs over UDP: publish 7379/udp (clients) and 7380/udp (peers); 7381/tcp serves
# metrics and health when --listen-metrics asks for it.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# rust-toolchain.toml pins the toolchain; rustup fetches it on the first cargo call.
RUN cargo build --release --locked -p etch-host -p etch-cli --bins \
    && install -D -m 0755 -t /out target/release/etchd target/release/etchctl

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --home-dir /var/lib/etch etch \
    && mkdir -p /var/lib/etch \
    && chown etch /var/lib/etch
COPY --from=build /out/etchd /out/etchctl /usr/local/bin/
USER etch
WORKDIR /var/lib/etch
ENV ETCH_DATA_DIR=/var/lib/etch \
    ETCH_LISTEN_CLIENT=0.0.0.0:7379 \
    ETCH_LISTEN_PEER=0.0.0.0:7380 \
    ETCHCTL_CACERT=/var/lib/etch/certs/ca.crt \
    ETCHCTL_CERT=/var/lib/etch/certs/root.crt \
    ETCHCTL_KEY=/var/lib/etch/certs/root.key
EXPOSE 7379/udp 7380/udp 7381/tcp
VOLUME /var/lib/etch
# SIGTERM stops a member cleanly; give it the time to flush.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s \
    CMD ["etchctl", "endpoint", "health"]
ENTRYPOINT ["etchd"]
