"""
The deployment files in deploy/, checked as far as they can be without a Docker engine: the compose file parses
and has the topology the guide describes, every setting it gives the proxy is a real one, Letta gets the settings
it needs on Postgres and Redis, Open WebUI forwards its chat id, and the Dockerfile installs and runs the proxy.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from letta_hayhooks.settings import env_var_names

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def test_the_compose_file_has_the_topology(compose: dict) -> None:
    assert {"postgres", "redis", "letta-1", "letta-2", "proxy", "nginx", "open-webui"} <= set(compose["services"])
    assert compose["services"]["postgres"]["image"].startswith("pgvector/pgvector:")
    assert compose["services"]["proxy"]["deploy"]["replicas"] >= 2
    assert compose["services"]["proxy"]["build"]["dockerfile"] == "deploy/Dockerfile"
    nginx = (DEPLOY / "nginx.conf").read_text()
    assert "./nginx.conf:/etc/nginx/nginx.conf:ro" in compose["services"]["nginx"]["volumes"]
    assert re.search(r"upstream proxies \{[^}]*server proxy:1416", nginx)
    assert "server letta-1:8283" in nginx and "server letta-2:8283" in nginx
    assert "proxy_buffering off;" in nginx


def test_every_proxy_variable_is_a_setting(compose: dict) -> None:
    environment = compose["services"]["proxy"]["environment"]
    assert isinstance(environment, dict)
    known = set(env_var_names())
    named = [name for name in environment if name.startswith("LETTA_")]
    assert named and set(named) <= known, sorted(set(named) - known)
    assert environment["LETTA_BASE_URL"] == "http://nginx:8283"  # both Letta servers, through the balancer


@pytest.mark.parametrize("service", ["letta-1", "letta-2"])
def test_letta_runs_on_postgres_with_pooling_and_redis(compose: dict, service: str) -> None:
    environment = compose["services"][service]["environment"]
    assert compose["services"][service]["image"] == "letta/letta:0.16.8"
    assert environment["LETTA_PG_URI"].startswith("postgresql://") and "@postgres:5432/" in environment["LETTA_PG_URI"]
    assert environment["LETTA_PG_URI"].endswith("?sslmode=disable")
    assert environment["LETTA_DISABLE_SQLALCHEMY_POOLING"] == "false"
    assert environment["LETTA_REDIS_HOST"] == "redis"


def test_the_second_letta_waits_for_the_first_ones_migrations(compose: dict) -> None:
    assert compose["services"]["letta-2"]["depends_on"]["letta-1"]["condition"] == "service_healthy"


def test_open_webui_forwards_its_chat_id_to_the_balancer(compose: dict) -> None:
    environment = compose["services"]["open-webui"]["environment"]
    assert environment["ENABLE_FORWARD_USER_INFO_HEADERS"] == "true"
    assert environment["OPENAI_API_BASE_URL"] == "http://nginx:8080/v1"
    assert compose["services"]["nginx"]["ports"] == ["8080:8080"]


def test_the_dockerfile_installs_and_runs_the_proxy() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim$", dockerfile, re.MULTILINE)
    # the image installs the lock, then the project without resolving anything
    assert re.search(r"^RUN pip install [^\n]*--require-hashes --no-deps -r requirements/run\.lock$", dockerfile,
                     re.MULTILINE)
    assert re.search(r"^RUN pip install [^\n]*--no-deps --no-build-isolation \.", dockerfile, re.MULTILINE)
    assert 'CMD ["letta-hayhooks", "serve", "--host", "0.0.0.0", "--port", "1416"]' in dockerfile
    # every path the image copies exists in the repository
    root = DEPLOY.parent
    for line in re.findall(r"^COPY (.+)$", dockerfile, re.MULTILINE):
        for source in line.split()[:-1]:
            assert (root / source).exists(), source


def test_the_guide_says_what_was_not_tested() -> None:
    guide = (DEPLOY / "README.md").read_text()
    assert "was ever run or built here" in guide
