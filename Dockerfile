# Multi-stage build of both programs. Run each with its own command, e.g.
#   docker run --rm -p 8081:8081 -e WIZ_BACKEND__INTERNAL_TOKEN=... -e WIZ_BACKEND__LISTEN=0.0.0.0:8081 IMAGE wiz-backend
#   docker run --rm -p 8080:8080 -e WIZ_GATEWAY__INTERNAL_TOKEN=... -e WIZ_GATEWAY__BACKEND_URL=http://backend:8081 IMAGE wiz-gateway
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
 && install -d -o wiz -g wiz /srv/wiz/data
COPY --from=build /usr/local/bin/wiz-gateway /usr/local/bin/wiz-backend /usr/local/bin/
COPY config /srv/wiz/config
WORKDIR /srv/wiz
USER wiz
# The backend's SQLite database lives here by default (database_url sqlite://data/wiz.db).
VOLUME /srv/wiz/data
EXPOSE 8080 8081 9091
CMD ["wiz-gateway"]
