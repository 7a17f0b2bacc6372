# spotterd, spotterctl and the synthetic demo trainer on Debian 12 (bookworm).
# Stage "build" compiles with Debian's -dev packages only (never a fetched gRPC);
# the runtime stage carries only the shared libraries the binaries link.
#   docker build -t spotter .           (or deploy/image/build.sh with buildah)
#   docker run -p 50051:50051 -p 9464:9464 spotter
# BASE lets deploy/image/build.sh substitute a debootstrap-made bookworm.
ARG BASE=debian:bookworm-slim

FROM ${BASE} AS build
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      build-essential cmake pkg-config \
      libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler \
      libeigen3-dev libabsl-dev prometheus-cpp-dev zlib1g-dev libsqlite3-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY CMakeLists.txt VERSION ./
COPY proto proto
COPY core core
COPY server server
COPY client/cpp client/cpp
COPY examples examples
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=Release -DSPOTTER_BUILD_TESTS=OFF \
      -DSPOTTER_BUILD_BENCH=OFF \
 && cmake --build /build -j"$(nproc)" --target spotterd spotterctl synthetic_trainer \
 && install -D -m 0755 -t /out/usr/local/bin \
      /build/server/spotterd /build/client/cpp/spotterctl /build/examples/synthetic_trainer

FROM ${BASE} AS runtime
ARG DEBIAN_FRONTEND=noninteractive
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="spotter" \
      org.opencontainers.image.description="spotterd: gRPC training monitor (gradient-sketch spectra, phase directives, Prometheus metrics)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.base.name="debian:bookworm-slim" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      libgrpc++1.51 libgrpc29 libprotobuf32 libabsl20220623 \
      libprometheus-cpp-core1.0 libprometheus-cpp-pull1.0 zlib1g libsqlite3-0 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 spotter \
 && useradd --uid 10001 --gid spotter --no-create-home --home-dir /var/lib/spotter \
      --shell /usr/sbin/nologin spotter \
 && install -d -o spotter -g spotter -m 0750 /var/lib/spotter
COPY --from=build /out/ /
USER 10001:10001
WORKDIR /var/lib/spotter
# grpc: trainers, spotterctl, health. metrics: Prometheus /metrics.
EXPOSE 50051/tcp 9464/tcp
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["/usr/local/bin/spotterctl", "--server=127.0.0.1:50051", "--timeout=2", "health"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/spotterd"]
# All interfaces, state on /var/lib/spotter (mount a volume there). --insecure
# allows a non-loopback address without TLS and bearer tokens: for a private
# network only; see docs/DEPLOY.md for TLS and tokens. --undefok keeps these
# flags accepted by builds that predate them.
CMD ["--listen=0.0.0.0:50051", "--metrics_listen=0.0.0.0:9464", \
     "--state_file=/var/lib/spotter/spotter.db", "--insecure", "--undefok=state_file,insecure"]
