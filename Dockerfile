# Multi-stage build of both programs. Run each with its own command, e.g.
#   docker run --rm -p 8081:8081 -e WIZ_BACKEND__INTERNAL_TOKEN=... -e WIZ_BACKEND__LISTEN=0.0.0.0:8081 IMAGE wiz-backend
#   docker run --rm -p 8080:8080 -p 8443:8443 -e WIZ_GATEWAY__INTERNAL_TOKEN=... -e WIZ_GATEWAY__BACKEND_URL=http://backend:8081 IMAGE
# The default command runs the gateway under scripts/gateway, which stays PID 1 across a
# zero-downtime upgrade: copy the new binary in and hand over (see the README),
#   docker cp wiz-gateway CONTAINER:/srv/wiz/bin/wiz-gateway.new
#   docker exec CONTAINER sh -c 'mv bin/wiz-gateway.new bin/wiz-gateway && wiz-gateway-ctl upgrade'
FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --workspace --bins \
 && cp target/release/wiz-gateway target/release/wiz-backend /usr/local/bin/

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --home /srv/wiz --create-home wiz \
 && install -d -m 700 -o wiz -g wiz /srv/wiz/data
COPY --from=build /usr/local/bin/wiz-gateway /usr/local/bin/wiz-backend /usr/local/bin/
COPY scripts/gateway /usr/local/bin/wiz-gateway-ctl
COPY config /srv/wiz/config
# The gateway binary the control script runs, owned by wiz so an upgrade can replace it.
RUN install -d -o wiz -g wiz /srv/wiz/bin \
 && install -o wiz -g wiz /usr/local/bin/wiz-gateway /srv/wiz/bin/wiz-gateway
WORKDIR /srv/wiz
USER wiz
ENV WIZ_GATEWAY_BIN=/srv/wiz/bin/wiz-gateway WIZ_RUN_DIR=/srv/wiz/data \
    WIZ_GATEWAY__UPGRADE_SOCK=/srv/wiz/data/upgrade.sock
# The backend's SQLite database lives here by default (database_url sqlite://data/wiz.db).
VOLUME /srv/wiz/data
EXPOSE 8080 8443 8081 9091
CMD ["wiz-gateway-ctl", "run"]
