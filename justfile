# msarch: the commands. `just` alone lists them.
set shell := ["bash", "-euo", "pipefail", "-c"]

venv := ".venv"
bin := venv / "bin"

default:
    @just --list

# create the virtual environment and install msarch with its dev tools
install:
    test -x {{bin}}/python || python3 -m venv {{venv}}
    {{bin}}/pip install --quiet --upgrade pip
    {{bin}}/pip install --quiet -e '.[dev]'

# run the whole stack on this machine (Ctrl-C stops it)
up:
    {{bin}}/msarch up

# ruff (lint and format) and mypy strict
lint:
    {{bin}}/ruff check src apps tests bench
    {{bin}}/ruff format --check src apps tests bench
    {{bin}}/mypy

# format the code
fmt:
    {{bin}}/ruff format src apps tests bench
    {{bin}}/ruff check --fix src apps tests bench

# every test: lint, unit, integration, end to end, faults, containers, clusters, k8s manifests
test *args: lint
    tests/prepare.sh
    {{bin}}/pytest {{args}}

# only the fast unit tests
unit *args:
    {{bin}}/pytest tests/unit {{args}}

# benchmarks (figures printed with the baseline measured in the same run)
bench *args:
    {{bin}}/python -m bench {{args}}

# open the docs (OpenAPI and AsyncAPI) of the running stack
docs:
    @echo "OpenAPI:  http://127.0.0.1:8000/docs"
    @echo "AsyncAPI: http://127.0.0.1:8000/docs/asyncapi"
    -xdg-open http://127.0.0.1:8000/docs 2>/dev/null || true

# the whole stack in containers with the upstream images (Docker with the compose plugin); `cluster`: clustered engines, two of each service
compose-up stack="single":
    docker compose -p msarch -f infra/compose{{ if stack == "cluster" { ".cluster" } else { "" } }}.yaml up --build -d

# the same stack with every image built here from Debian's packages and PyPI (no registry); `cluster`: the cluster stack
compose-local stack="single":
    infra/local/compose.sh up {{stack}}

# stop and remove the container stack, single or cluster (volumes kept: `infra/local/compose.sh down -v` drops them)
compose-down:
    infra/local/compose.sh down

# the container suite alone (also part of `just test`)
containers *args:
    tests/prepare.sh
    {{bin}}/pytest tests/containers {{args}}

# the cluster suite alone: node loss, partitions, Redis failover on three-node clusters (also part of `just test`)
clusters *args:
    tests/prepare.sh
    {{bin}}/pytest tests/clusters {{args}}

# the fault-injection suite alone (also part of `just test`)
faults *args:
    {{bin}}/pytest tests/faults {{args}}
