# Multi-stage build: a static kmigrate binary on a minimal base (no shell),
# run as a non-root user.
#   docker build -t kmigrate .                          # version from the VCS stamp
#   docker build --build-arg VERSION=v1.2.3 -t kmigrate:v1.2.3 .
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# Empty VERSION: "kmigrate version" reports the revision Go stamps from .git.
ARG VERSION=""
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w -X main.version=${VERSION}" -o /out/kmigrate ./cmd/kmigrate

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/kmigrate /usr/local/bin/kmigrate
USER nonroot:nonroot
# The default --data-dir (kmigrate-data) is relative: keep it writable.
WORKDIR /home/nonroot
EXPOSE 9092 9644
ENTRYPOINT ["/usr/local/bin/kmigrate"]
# The admin listener on 0.0.0.0 needs a token: run with -e KMIGRATE_ADMIN_TOKEN=...
# Every setting is also a KMIGRATE_* variable or a key of --config FILE; these
# two flags win over both, so a container using a config file gives its own
# arguments (deploy/kubernetes/ does: ["proxy", "--config", FILE]).
CMD ["proxy", "--listen", "0.0.0.0:9092", "--admin-listen", "0.0.0.0:9644"]
