# One image holds both ThingDB binaries: /manager (the operator, the default
# command) and /thingdb (the node; the operator's StatefulSets run
# `/thingdb serve`). Both are static (CGO_ENABLED=0) and run as the numeric
# non-root user 65532, so the image needs no /etc/passwd and meets the
# "restricted" Pod Security Standard.
#
# Two ways to build it:
#
#   docker build -t thingdb:dev .
#       The default (last) stage: compiles the binaries in a golang builder
#       stage. Needs the golang base image and the Go module proxy.
#
#   make build && docker build --target local -t thingdb:dev .
#       The "local" stage: copies bin/thingdb and bin/manager, as built by
#       `make build`, into an empty image. Pulls nothing, so it works on a
#       machine that cannot reach a container registry. `make docker-build`
#       takes this path unless DOCKER_BUILD_MODE=source.

# GO_VERSION matches the go directive in go.mod.
ARG GO_VERSION=1.26.8

# Offline path: the binaries come from the build context (see .dockerignore).
# The legacy builder runs stages in file order and stops at the target, so
# this stage must stay first for `--target local` to pull nothing.
FROM scratch AS local
COPY bin/thingdb bin/manager /
USER 65532:65532
CMD ["/manager"]

# Online path, stage 1: build both binaries from source.
FROM golang:${GO_VERSION} AS builder
WORKDIR /src
# Module downloads form their own layer, so a source change does not repeat them.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -o /out/thingdb ./cmd/thingdb \
 && CGO_ENABLED=0 go build -trimpath -o /out/manager ./cmd/manager

# Online path, stage 2 and the default target: the same layout as "local".
FROM scratch
COPY --from=builder /out/thingdb /out/manager /
USER 65532:65532
CMD ["/manager"]
