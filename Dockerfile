# Multi-stage build: a static kmigrate binary on a minimal base, run as a
# non-root user.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/kmigrate ./cmd/kmigrate

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/kmigrate /usr/local/bin/kmigrate
USER nonroot:nonroot
EXPOSE 9092 9644
ENTRYPOINT ["/usr/local/bin/kmigrate"]
# The admin listener on 0.0.0.0 needs a token: run with -e KMIGRATE_ADMIN_TOKEN=...
CMD ["proxy", "--listen", "0.0.0.0:9092", "--admin-listen", "0.0.0.0:9644"]
