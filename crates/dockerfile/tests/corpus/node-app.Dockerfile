# syntax=docker/dockerfile:1
ARG NODE_VERSION=20

FROM node:${NODE_VERSION}-bookworm-slim AS base
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV NODE_ENV=production \
    NPM_CONFIG_UPDATE_NOTIFIER=false
WORKDIR /app

FROM base AS deps
RUN --mount=type=cache,target=/root/.npm,id=npm \
    --mount=type=bind,source=package.json,target=package.json \
    --mount=type=bind,source=package-lock.json,target=package-lock.json \
    --mount=type=ssh \
    npm ci --omit=dev

FROM base AS config
# Heredocs: a script run by the shell, and inline files.
RUN <<EOF
set -eux
apt-get update
apt-get install -y --no-install-recommends tini
rm -rf /var/lib/apt/lists/*
EOF
COPY <<-"CONF" /etc/app/app.conf
	listen = 3000
	user = ${APP_USER}
	CONF
COPY <<nginx.conf <<robots.txt /srv/
server { listen 80; }
nginx.conf
User-agent: *
robots.txt
RUN <<-SCRIPT bash
	echo "expanded by the shell: $HOME"
	SCRIPT

FROM base
ARG APP_USER=node
COPY --from=deps /app/node_modules ./node_modules
COPY --from=config /etc/app /etc/app
COPY --chown=node:node package.json server.js ./
VOLUME ["/app/data"]
VOLUME /tmp/cache
ONBUILD COPY . /app/src
ONBUILD RUN npm run build
USER ${APP_USER}
EXPOSE 3000
ENTRYPOINT ["tini", "--"]
CMD node server.js
