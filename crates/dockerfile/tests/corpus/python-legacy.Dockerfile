FROM python:3.12-slim as builder
MAINTAINER Jane Doe <jane@example.com>
ENV PIP_NO_CACHE_DIR 1
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
ADD --checksum=sha256:24454f830cdb571e2c4ad15481119c43b3cafd48dd869a9b2945d1036d1dc68d \
    https://example.com/tools/wheel-cache.tar.gz /tmp/
ADD --keep-git-dir=true https://github.com/example/lib.git#v1.2.3 /src/lib
ADD --chown=1000:1000 --chmod=644 --link vendor.tar.gz /opt/
COPY --parents --exclude=*.pyc --exclude=**/__pycache__ src/*/requirements.txt /reqs/
RUN pip install --prefix=/install \
        # pinned in the lock file
        -r /reqs/requirements.txt \

        wheel

FROM python:3.12-slim
COPY --from=builder /install /usr/local
COPY ["app dir/main.py", "/srv/app/"]
HEALTHCHECK NONE
ARG PORT=8000
EXPOSE ${PORT}/tcp 5678/udp 6000-6010
LABEL version="1.0" maintainer.team=platform
WORKDIR /srv/app
CMD ["python", "main.py"]
