// Package packaging tests the container image and the Docker Compose demo
// as a user runs them: `make docker-build` must build an image, pulling
// nothing, whose /thingdb and /manager run as a non-root user, and
// hack/compose-demo.sh must pass. Both tests need a Docker engine and skip,
// saying why, when none is reachable; they also skip under -short.
package packaging
